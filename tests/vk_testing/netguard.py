"""Block every non-loopback connection for the whole test run: proof that nothing reaches a network.

Loopback (127.0.0.0/8, ::1, localhost, Unix sockets) stays open for the T2/T3 servers. A blocked
attempt raises `NetworkBlocked` and is recorded, so a test can also assert that nothing even tried.

Child processes: `guard_children()` (conftest) puts `netguard_site/` on PYTHONPATH, whose sitecustomize.py
loads this file and installs the same guard in every Python process the tests start (the T2 ComfyUI server,
scripts/queue, scripts/models, reference subprocesses), and names a log file (VISIONKIT_NETGUARD_LOG) where
those processes append their blocked attempts; `child_attempts()` reads it back at the end of the run.
A harness that builds a child's environment from scratch passes it through `child_env(env)`.
This file imports only the standard library: the children load it by path, outside any package.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile

attempts: list[str] = []
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netguard_site")
LOG_ENV = "VISIONKIT_NETGUARD_LOG"
_log_path: str | None = None


class NetworkBlocked(OSError):
    pass


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: resolving it already leaves the machine


_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex
_orig_getaddrinfo = socket.getaddrinfo
_orig_create_connection = socket.create_connection


def _record(what: str) -> None:
    attempts.append(what)
    if _log_path:  # a child process: tell the test run (one line per attempt, appended atomically enough)
        try:
            with open(_log_path, "a", encoding="utf-8") as f:
                f.write(f"{what} (pid {os.getpid()}: {' '.join(sys.argv)[:200]})\n")
        except OSError:
            pass


def _check(sock_family, address):
    if sock_family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not _is_loopback(address[0]):
            _record(f"connect {address}")
            raise NetworkBlocked(f"VisionKit tests block network access: connect to {address!r}")


def _connect(self, address):
    _check(self.family, address)
    return _orig_connect(self, address)


def _connect_ex(self, address):
    _check(self.family, address)
    return _orig_connect_ex(self, address)


def _getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        _record(f"resolve {host}")
        raise NetworkBlocked(f"VisionKit tests block network access: resolving {host!r}")
    return _orig_getaddrinfo(host, *args, **kwargs)


def install(log_path: str | None = None) -> None:
    global _log_path
    _log_path = log_path
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _orig_connect
    socket.socket.connect_ex = _orig_connect_ex
    socket.getaddrinfo = _orig_getaddrinfo


def child_env(env: dict) -> dict:
    """`env` with the guard for a Python child: netguard_site first on PYTHONPATH, and the log file."""
    env = dict(env)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    env["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *rest])
    if os.environ.get(LOG_ENV):
        env[LOG_ENV] = os.environ[LOG_ENV]
    return env


def guard_children() -> str:
    """Every Python process started from now on (os.environ is inherited) installs the guard; returns the log."""
    if not os.environ.get(LOG_ENV):
        fd, path = tempfile.mkstemp(prefix="visionkit-netguard-", suffix=".log")
        os.close(fd)
        os.environ[LOG_ENV] = path
    os.environ.update(child_env(os.environ))
    return os.environ[LOG_ENV]


def child_attempts() -> list[str]:
    """What child processes reported (and empties the log, so a second read only shows new attempts)."""
    path = os.environ.get(LOG_ENV)
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    open(path, "w").close()
    return [f"child: {line}" for line in lines]
