"""Which model files a benchmark opened (the harness re-exports FileAudit)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


class FileAudit:
    """Which files were opened, by path: Python's `open` audit event (builtins.open, os.open, torch.load's
    own open, zipfile) plus wrappers for the readers that open in native code (safetensors' safe_open, which
    load_file uses too; onnxruntime's InferenceSession). Only paths under `roots` are kept.

    `tag` (e.g. the cache build in progress) is recorded with each open, so a caller can tell one load that
    opens a file twice (a header check, then the read) from two loads of the same file.
    """

    _hook_installed = False
    _active: "FileAudit | None" = None

    def __init__(self, roots):
        self.roots = [os.path.realpath(str(r)) for r in roots]
        self.events: list[tuple[str, str]] = []  # (real path, tag)
        self.tag = ""
        self._patched: list[tuple[Any, str, Any]] = []

    # the audit hook stays for the life of the process (hooks cannot be removed); it is idle unless active
    @classmethod
    def _hook(cls, event, args):
        if event == "open" and cls._active is not None and args:
            cls._active._record(args[0])

    def _record(self, path) -> None:
        if isinstance(path, int) or path is None:
            return
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:  # noqa: BLE001 - never break the program being audited
            return
        if any(p == r or p.startswith(r + os.sep) for r in self.roots):
            self.events.append((p, self.tag))

    def _wrap(self, original):
        audit = self

        def wrapper(filename, *a, **kw):
            audit._record(filename)
            return original(filename, *a, **kw)

        wrapper.__vk_original__ = original
        return wrapper

    def __enter__(self):
        if not FileAudit._hook_installed:
            sys.addaudithook(FileAudit._hook)
            FileAudit._hook_installed = True
        FileAudit._active = self
        try:
            import safetensors
            import safetensors.torch

            original = safetensors.safe_open
            wrapper = self._wrap(original)
            for mod in list(sys.modules.values()):  # also modules that did `from safetensors import safe_open`
                try:
                    if getattr(mod, "safe_open", None) is original:
                        self._patched.append((mod, "safe_open", original))
                        setattr(mod, "safe_open", wrapper)
                except Exception:  # noqa: BLE001 - lazy modules may refuse getattr
                    continue
        except ImportError:
            pass
        try:
            import onnxruntime as ort

            cls = ort.InferenceSession
            init = cls.__init__

            def ort_init(this, path_or_bytes, *a, _init=init, **kw):
                if isinstance(path_or_bytes, (str, os.PathLike)):
                    self._record(path_or_bytes)
                return _init(this, path_or_bytes, *a, **kw)

            self._patched.append((cls, "__init__", init))
            cls.__init__ = ort_init
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        FileAudit._active = None
        for obj, name, original in reversed(self._patched):
            setattr(obj, name, original)
        self._patched.clear()
        return False

    def opens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p, _ in self.events:
            out[p] = out.get(p, 0) + 1
        return out

    def loads_per_file(self) -> dict[str, int]:
        """Per file: how many distinct tags (e.g. cache builds) opened it."""
        tags: dict[str, set] = {}
        for p, t in self.events:
            tags.setdefault(p, set()).add(t)
        return {p: len(t) for p, t in tags.items()}
