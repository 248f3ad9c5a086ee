"""Entry point of `scripts/models`: loads the pack's tools/ and the data modules of models/core/ (the catalogue,
the folder table; standard library only), never the pack's nodes, torch or ComfyUI: the pack's root
__init__.py is not run (a bare parent package stands in for it)."""
from __future__ import annotations

import importlib
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # abspath: keep a custom_nodes link


def load_downloader():
    name = "visionkit_models_cli"
    if name not in sys.modules:
        root = types.ModuleType(name)
        root.__path__ = [ROOT]
        sys.modules[name] = root
    return importlib.import_module(f"{name}.tools.downloader")


if __name__ == "__main__":
    sys.exit(load_downloader().main())
