"""Which ComfyUI the T2/T3 tests run: the checkouts found, their versions, and the frontend each one serves.

Checkouts (`find_comfyui_dirs`): $VISIONKIT_COMFYUI_DIRS (colon-separated), else $COMFYUI_DIR, else
../shared/comfyui and ../shared/comfyui-0.33, else .comfyui; a variable that names something that is not a
ComfyUI checkout raises ComfyUINotFound.

Frontends: each ComfyUI pins its `comfyui-frontend-package`; one venv holds only one of them, so every
frontend the tests use is an unpacked wheel under $VISIONKIT_FRONTENDS (default .venv/visionkit-frontends,
filled by scripts/lib/env.sh from the package index) and a server whose pinned frontend is not the
installed one is started with `--front-end-root` on it (`frontend_root`).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

from . import ROOT


class ComfyUINotFound(RuntimeError):
    pass


def _checkout(path: str, var: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not (p / "main.py").is_file() or not (p / "folder_paths.py").is_file():
        raise ComfyUINotFound(f"{var}={path} is not a ComfyUI checkout (no main.py / folder_paths.py)")
    return p


def find_comfyui_dirs() -> list[Path]:
    """Every ComfyUI to test, oldest first: $VISIONKIT_COMFYUI_DIRS (colon-separated), else $COMFYUI_DIR,
    else the snapshots <repo>/../shared/comfyui and ../shared/comfyui-0.33 that exist, else <repo>/.comfyui."""
    many = os.environ.get("VISIONKIT_COMFYUI_DIRS")
    if many:
        return [_checkout(p, "VISIONKIT_COMFYUI_DIRS") for p in many.split(os.pathsep) if p.strip()]
    env = os.environ.get("COMFYUI_DIR")
    if env:
        return [_checkout(env, "COMFYUI_DIR")]
    found = [p.resolve() for p in (ROOT.parent / "shared" / "comfyui", ROOT.parent / "shared" / "comfyui-0.33")
             if (p / "main.py").is_file()]
    if not found and (ROOT / ".comfyui" / "main.py").is_file():
        found = [(ROOT / ".comfyui").resolve()]
    return found


def find_comfyui_dir() -> Path | None:
    """The first ComfyUI of find_comfyui_dirs() (the primary version), else None."""
    dirs = find_comfyui_dirs()
    return dirs[0] if dirs else None


def comfyui_version(comfyui_dir) -> str:
    """__version__ of comfyui_version.py (read, not imported); "unknown" when absent."""
    try:
        text = (Path(comfyui_dir) / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    return m.group(1) if m else "unknown"


def pinned_frontend(comfyui_dir) -> str | None:
    """The comfyui-frontend-package version the ComfyUI's requirements.txt pins (None when it pins none)."""
    try:
        text = (Path(comfyui_dir) / "requirements.txt").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^comfyui[-_]frontend[-_]package\s*==\s*([\w.]+)", text, re.M | re.I)
    return m.group(1) if m else None


def installed_frontend() -> str | None:
    try:
        return importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        return None


FRONTENDS_DIR = Path(os.environ.get("VISIONKIT_FRONTENDS") or ROOT / ".venv" / "visionkit-frontends")
# The newest frontend the tests run against (beside each ComfyUI's pinned one); scripts/lib/env.sh fetches it.
NEWEST_FRONTEND = os.environ.get("VISIONKIT_NEWEST_FRONTEND", "1.58.1")


def frontend_root(version: str) -> Path | None:
    """The static folder of an unpacked comfyui-frontend-package wheel (for --front-end-root), or None."""
    static = FRONTENDS_DIR / version / "comfyui_frontend_package" / "static"
    return static if (static / "index.html").is_file() else None


def frontend_args(comfyui_dir, frontend: str | None = None) -> list[str]:
    """--front-end-root for `frontend` (default: the ComfyUI's pinned one) unless it is the installed one.
    Raises ComfyUINotFound when that frontend is neither installed nor unpacked under FRONTENDS_DIR."""
    want = frontend or pinned_frontend(comfyui_dir)
    if want is None or want == installed_frontend():
        return []
    root = frontend_root(want)
    if root is None:
        raise ComfyUINotFound(f"frontend {want} is not in {FRONTENDS_DIR} (./scripts/test fetches it: "
                              f"pip download --no-deps comfyui-frontend-package=={want}, then unzip it into "
                              f"{FRONTENDS_DIR / want})")
    return ["--front-end-root", str(root)]
