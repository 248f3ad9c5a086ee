"""A real ComfyUI server for T2 tests: started once per session, with the pack linked in, torn down always.

    with ComfyServer(comfyui_dir, models_dir, base_dir) as srv:
        srv.get_json("/object_info")
        history = srv.run_prompt({...})

The server runs `python main.py --cpu --listen 127.0.0.1 --port <free>` from the ComfyUI checkout with
`--base-directory <base_dir>` (models, custom_nodes, input, output, temp, user live there; the checkout is
only read), an in-memory database, and an extra_model_paths.yaml (scripts/lib/model_paths.py) pointing
every VisionKit folder key at the tiny models root. The repository is linked as
`<base_dir>/custom_nodes/ComfyUI-VisionKit`. Its log goes to `<base_dir>/comfyui.log`.

Two ComfyUI versions: every ComfyUI found (`find_comfyui_dirs`: $VISIONKIT_COMFYUI_DIRS, colon-separated,
else $COMFYUI_DIR, else ../shared/comfyui and ../shared/comfyui-0.33, else .comfyui) is tested. The pytest
fixture `comfy` (session scope) is parametrized over them: every T2 test runs once per version, on ONE
server per version shared by every module that imports it
(`from vk_testing.comfy_server import comfy  # noqa: F401`). `comfy_primary` is the first version's server
(the full browser tier runs there). Both skip when no ComfyUI is found and fail when COMFYUI_DIR names
something that is not a ComfyUI checkout.

Which checkouts and which frontend each one serves: vk_testing/comfy_checkouts.py.
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from . import ROOT, netguard
from .comfy_checkouts import (  # noqa: F401
    NEWEST_FRONTEND, ComfyUINotFound, comfyui_version, find_comfyui_dir, find_comfyui_dirs, frontend_args,
)

PACK_FOLDER = "ComfyUI-VisionKit"  # the custom_nodes folder name the pack gets in the test server
STARTUP_TIMEOUT = float(os.environ.get("VISIONKIT_T2_STARTUP_TIMEOUT", "120"))
# Environment the pytest process sets for the standalone pack; the server must not inherit it.
_STRIP_ENV = ("VISIONKIT_STANDALONE", "VISIONKIT_MODELS_DIR", "VISIONKIT_DEVICE", "PYTHONSAFEPATH",
              "PYTHONPATH", "PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS")


class ComfyServerError(RuntimeError):
    """The server failed to start, died, or answered something unexpected; the message has the log tail."""


class HTTPStatusError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body):
        self.method, self.path, self.status, self.body = method, path, status, body
        shown = body if isinstance(body, str) else json.dumps(body)
        super().__init__(f"{method} {path} -> HTTP {status}: {shown[:2000]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_paths_module():
    path = ROOT / "scripts" / "lib" / "model_paths.py"
    spec = importlib.util.spec_from_file_location("_visionkit_model_paths", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ComfyServer:
    def __init__(self, comfyui_dir, models_dir, base_dir, *, python: str | None = None, port: int | None = None,
                 extra_args=(), startup_timeout: float = STARTUP_TIMEOUT, pack_folder: str = PACK_FOLDER):
        self.comfyui_dir = Path(comfyui_dir)
        self.models_dir = Path(models_dir)
        self.base_dir = Path(base_dir)
        self.python = python or sys.executable
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.pack_folder = pack_folder
        self.client_id = uuid.uuid4().hex
        self.version = comfyui_version(self.comfyui_dir)
        self.log_path = self.base_dir / "comfyui.log"
        self.yaml_path = self.base_dir / "extra_model_paths.yaml"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file = None
        # Loopback only, and never through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pack_dir(self) -> Path:
        return self.base_dir / "custom_nodes" / self.pack_folder

    def command(self) -> list[str]:
        return [self.python, str(self.comfyui_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
                "--port", str(self.port), "--base-directory", str(self.base_dir),
                "--database-url", "sqlite:///:memory:", "--disable-auto-launch",
                "--extra-model-paths-config", str(self.yaml_path), *self.extra_args]

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
        env.update(PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
        return netguard.child_env(env)  # the tests' socket guard in the server too (netguard_site/)

    def prepare(self) -> None:
        """The base directory: custom_nodes/<pack> -> the repository, the yaml, empty ComfyUI folders, and the
        page's settings with the tutorial marked done (else it covers the canvas in browser tests)."""
        for d in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base_dir / d).mkdir(parents=True, exist_ok=True)
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        if not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}), encoding="utf-8")
        if self.pack_dir.is_symlink() or self.pack_dir.exists():
            self.pack_dir.unlink()
        self.pack_dir.symlink_to(ROOT, target_is_directory=True)
        _model_paths_module().write(self.yaml_path, [self.models_dir], repo=ROOT)

    def start(self) -> "ComfyServer":
        if self.proc is not None:
            return self
        self.prepare()
        self._log_file = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=str(self.comfyui_dir), env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        atexit.register(self.stop)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyServerError(f"ComfyUI exited with code {self.proc.returncode} during start-up "
                                       f"(command: {' '.join(self.command())})\n--- log tail ---\n{self.log_tail()}")
            try:
                status, _ = self.request("GET", "/system_stats", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise ComfyServerError(f"ComfyUI did not answer /system_stats within {self.startup_timeout:.0f} s "
                               f"(VISIONKIT_T2_STARTUP_TIMEOUT)\n--- log tail ---\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)  # its own session: the server and anything it started
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def rss_bytes(self) -> int:
        """The server process's resident memory (Linux /proc/<pid>/status VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ log
    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # ------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body=None, timeout: float = 30):
        """(status, parsed JSON or text). HTTP errors are returned, not raised; connection errors raise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with self._opener.open(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text) if text.strip() else None
        except ValueError:
            return status, text

    def _ok(self, method: str, path: str, body=None, timeout: float = 30):
        if not self.alive():
            raise ComfyServerError(f"ComfyUI is not running (exit code "
                                   f"{None if self.proc is None else self.proc.returncode})\n{self.log_tail()}")
        status, out = self.request(method, path, body, timeout)
        if status != 200:
            raise HTTPStatusError(method, path, status, out)
        return out

    def get_json(self, path: str, **params):
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self._ok("GET", path)

    def post_json(self, path: str, body=None):
        return self._ok("POST", path, {} if body is None else body)

    # ------------------------------------------------------------ prompts
    def queue_prompt(self, prompt: dict, extra: dict | None = None) -> str:
        """POST /prompt; returns the prompt id. A rejected prompt raises HTTPStatusError (status 400, node_errors)."""
        out = self._ok("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id, **(extra or {})})
        return out["prompt_id"]

    def submit(self, prompt: dict):
        """POST /prompt without raising: (status, body) — for tests of rejected prompts."""
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait_history(self, prompt_id: str, timeout: float = 120) -> dict:
        """The /history entry of a prompt once it has finished (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self._ok("GET", f"/history/{prompt_id}")
            entry = (hist or {}).get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.1)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")

    def run_prompt(self, prompt: dict, timeout: float = 120, expect_success: bool = True) -> dict:
        entry = self.wait_history(self.queue_prompt(prompt), timeout)
        if expect_success and entry["status"]["status_str"] != "success":
            raise ComfyServerError("prompt failed: " + json.dumps(entry["status"].get("messages"), default=str)[:4000]
                                   + "\n--- log tail ---\n" + self.log_tail())
        return entry

    def free(self, until=None, timeout: float = 30, repost_every: float = 2.0, unload_models: bool = True,
             free_memory: bool = True):
        """POST /free (the "Unload models" / "Free memory" buttons). With `until`, poll it and post again
        every `repost_every` s until it holds, and return its value.

        /free only sets flags that the worker thread reads after its wait for the next prompt wakes up.
        ComfyUI 0.3.64's worker reads the flags right after a prompt, then runs gc, then waits: a /free
        that arrives during that gc is not seen until the next prompt (or 1000 s), since its wake-up
        notify found nobody waiting. Posting again once the worker waits is what a user would do.
        """
        body = {"unload_models": unload_models, "free_memory": free_memory}
        self.post_json("/free", body)
        if until is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            value = self.wait_until(until, timeout=min(repost_every, max(deadline - time.monotonic(), 0.01)),
                                    what="the effect of POST /free", raise_on_timeout=False)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ComfyServerError(f"POST /free had no effect within {timeout:.0f} s (last: {until()!r})\n"
                                       f"{self.log_tail()}")
            self.post_json("/free", body)

    def wait_until(self, predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition",
                   raise_on_timeout: bool = True):
        """Poll `predicate()` until it returns something truthy (returned); for asynchronous effects."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = predicate()
            if last or time.monotonic() >= deadline:
                break
            time.sleep(interval)
        if last or not raise_on_timeout:
            return last
        raise ComfyServerError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})\n"
                               f"{self.log_tail()}")


# ---------------------------------------------------------------- the shared session servers (one per version)
_shared: dict[Path, ComfyServer] = {}
_users: dict[Path, int] = {}


def acquire_shared(models_dir, base_dir, comfyui_dir=None) -> ComfyServer:
    """The session's server for one ComfyUI (default: the primary one), started on first use with that
    version's pinned frontend; pair every call with release_shared(comfyui_dir)."""
    comfyui = Path(comfyui_dir) if comfyui_dir is not None else find_comfyui_dir()
    if comfyui is None:
        raise ComfyUINotFound(NOT_FOUND)
    server = _shared.get(comfyui)
    if server is None or not server.alive():
        if server is not None:
            server.stop()
        server = ComfyServer(comfyui, models_dir, base_dir, extra_args=frontend_args(comfyui)).start()
        _shared[comfyui] = server
    _users[comfyui] = _users.get(comfyui, 0) + 1
    return server


def release_shared(comfyui_dir=None) -> None:
    comfyui = Path(comfyui_dir) if comfyui_dir is not None else find_comfyui_dir()
    _users[comfyui] = _users.get(comfyui, 0) - 1
    if _users[comfyui] <= 0 and comfyui in _shared:
        _shared.pop(comfyui).stop()


NOT_FOUND = ("no ComfyUI found: set COMFYUI_DIR to a ComfyUI checkout (or have one at ../shared/comfyui "
             "or .comfyui beside the repository); ./scripts/test does this for you")

try:
    import pytest
except ImportError:  # the harness itself works without pytest
    pytest = None

def _params():
    """(comfyui dir or a problem, test id) for the `comfy` fixture's parameters."""
    try:
        dirs = find_comfyui_dirs()
    except ComfyUINotFound as e:
        return [(e, "comfyui-misconfigured")]
    if not dirs:
        return [(None, "no-comfyui")]
    return [(d, f"comfyui-{comfyui_version(d)}") for d in dirs]


def _serve(request, tmp_path_factory, found):
    if isinstance(found, ComfyUINotFound):
        pytest.fail(str(found))
    if found is None:
        from . import tiers

        tiers.missing("T2", NOT_FOUND)  # a failure when T2 is required (VISIONKIT_REQUIRE_TIERS)
    models_dir = request.getfixturevalue("models_dir")
    try:
        server = acquire_shared(models_dir, tmp_path_factory.mktemp("comfyui_base"), found)
    except ComfyUINotFound as e:
        pytest.fail(str(e))
    return server


if pytest is not None:
    _PARAMS = _params()

    @pytest.fixture(scope="session", params=[p for p, _ in _PARAMS], ids=[i for _, i in _PARAMS])
    def comfy(request, tmp_path_factory):
        """The real ComfyUI server of one version (each test runs once per version found), with the pack
        and the tiny models; one server per version for the whole session."""
        server = _serve(request, tmp_path_factory, request.param)
        try:
            yield server
        finally:
            release_shared(request.param)

    @pytest.fixture(scope="session")
    def comfy_primary(request, tmp_path_factory):
        """The first version's server only (the same one `comfy` uses for it): for the full browser tier."""
        found = _PARAMS[0][0]
        server = _serve(request, tmp_path_factory, found)
        try:
            yield server
        finally:
            release_shared(found)
