"""Test support for VisionKit: the pack imported under a fixed name, tiny model fixtures, the workflow
runner and the real-ComfyUI harness. Tests only; never imported by the pack."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACK = "visionkit_pack"  # the name tests import the pack by (users may name the folder anything)


def import_pack():
    """Import the repository as a package named PACK (once) and return it."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(PACK, None)
        raise
    return mod


def dev_script(name: str):
    """A module of scripts/dev/ (workflow and README generators), imported from its file for the tests."""
    path = ROOT / "scripts" / "dev" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_vk_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod
