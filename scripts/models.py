"""Entry point of `scripts/models`: loads only the pack's models/ package (standard library modules: the
catalog, the folder table, the manifest, the downloader), never the pack's nodes, torch or ComfyUI."""
from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # abspath: keep a custom_nodes link


def load_models_package():
    name = "visionkit_models_cli"
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "models", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(ROOT, "models")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{name}.downloader")


if __name__ == "__main__":
    sys.exit(load_models_package().main())
