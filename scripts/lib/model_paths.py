"""Write an extra_model_paths.yaml that points ComfyUI at VisionKit's model folders.

Used by ./scripts/start and by the real-ComfyUI test harness (tests/vk_testing/comfy_server.py), so the
yaml format lives in one place. The folder table is models/core/folders.py FOLDERS, read without importing
the pack (no torch): only models/core/folders.py and models/core/host.py are loaded.

CLI: python scripts/lib/model_paths.py OUT.yaml MODELS_DIR [MORE_MODELS_DIR ...]
The first models dir is the default one (where ComfyUI puts new files); each folder key of the pack
points at <dir>/<folder> in every dir given.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_PKG = "_visionkit_folders_only"


def pack_folders(repo: Path = REPO) -> dict[str, str]:
    """{folder_paths key: folder name under a models dir} from the pack's FOLDERS table."""
    if _PKG not in sys.modules:
        pkg = types.ModuleType(_PKG)
        pkg.__path__ = [str(repo)]
        sub = types.ModuleType(_PKG + ".models")
        sub.__path__ = [str(repo / "models")]
        sys.modules[_PKG] = pkg
        sys.modules[_PKG + ".models"] = sub
    folders = importlib.import_module(_PKG + ".models.core.folders")
    return {key: spec.folder for key, spec in folders.FOLDERS.items()}


def render(sections: list[tuple[str, str, dict[str, str], bool]]) -> str:
    """YAML text: sections of (name, base_path, {key: folder}, is_default). Strings are JSON-quoted,
    which YAML reads as double-quoted scalars (paths with spaces, colons or '#' stay intact)."""
    out = ["# Written by VisionKit (scripts/lib/model_paths.py); rewritten at each start.\n"]
    for name, base, keys, is_default in sections:
        out.append(f"{json.dumps(name)}:\n  base_path: {json.dumps(str(base))}\n")
        if is_default:
            out.append("  is_default: true\n")
        for key, folder in keys.items():
            out.append(f"  {json.dumps(key)}: {json.dumps(folder)}\n")
    return "".join(out)


def write(path, models_dirs, repo: Path = REPO) -> str:
    keys = pack_folders(repo)
    sections = [(f"visionkit_{i}", os.path.abspath(d), keys, i == 0) for i, d in enumerate(models_dirs)]
    text = render(sections)
    Path(path).write_text(text, encoding="utf-8")
    return text


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    write(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
