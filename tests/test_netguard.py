"""The socket guard reaches every Python process the tests start (tests/vk_testing/netguard_site/).

A child started with the inherited environment, and one whose environment a harness built from scratch
through `netguard.child_env` (as the T2 server's is), both have the guard: a connection to a documentation
address (192.0.2.1, never routed) and a name lookup are refused and reported back to this process; loopback
stays open. The reported attempts are taken out of the log here, so they do not fail the run.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from vk_testing import netguard, tiers
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture)

CHILD = r"""
import socket, sys
assert "_visionkit_netguard" in sys.modules, "no guard in the child"
out = []
for what, fn in (("connect", lambda: socket.socket().connect(("192.0.2.1", 80))),
                 ("resolve", lambda: socket.getaddrinfo("example.com", 443))):
    try:
        fn()
        out.append(what + " went through")
    except OSError as ex:
        out.append(what + " " + type(ex).__name__)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)  # loopback is allowed
c.close(); srv.close()
print(";".join(out))
"""


def run_child(env) -> str:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_children_inherit_the_guard_and_report_attempts():
    assert netguard.child_attempts() == []  # nothing from earlier children
    assert run_child(dict(os.environ)) == "connect NetworkBlocked;resolve NetworkBlocked"
    got = netguard.child_attempts()  # read and cleared
    assert len(got) == 2 and "connect ('192.0.2.1', 80)" in got[0] and "resolve example.com" in got[1], got


def test_an_environment_built_from_scratch_gets_it_through_child_env():
    bare = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", netguard.LOG_ENV)}
    assert run_child(netguard.child_env(bare)) == "connect NetworkBlocked;resolve NetworkBlocked"
    assert len(netguard.child_attempts()) == 2


def test_this_process_is_guarded_too():
    before = list(netguard.attempts)
    try:
        with socket.socket() as s:
            s.connect(("192.0.2.1", 80))
        raise AssertionError("the connection went through")
    except netguard.NetworkBlocked:
        pass
    assert netguard.attempts[len(before):] == ["connect ('192.0.2.1', 80)"]
    del netguard.attempts[len(before):]  # the attempt was this test's own


@pytest.mark.t2
@tiers.optional_mark(not os.path.exists("/proc/self/environ"), "reads /proc/<pid>/environ (Linux only)")
def test_the_t2_server_runs_with_the_guard(comfy):  # noqa: F811
    """The real ComfyUI server's process: the guard's folder first on its PYTHONPATH, the log named, and no
    flag that would make Python skip it (-I, -E, -S)."""
    pid = comfy.proc.pid
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    assert env[b"PYTHONPATH"].decode().split(os.pathsep)[0] == netguard.SITE_DIR
    assert env[netguard.LOG_ENV.encode()].decode() == os.environ[netguard.LOG_ENV]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    script = next(i for i, a in enumerate(argv) if a.endswith(b"main.py"))
    assert not {b"-I", b"-E", b"-S"} & set(argv[1:script]), argv
