#!/usr/bin/env python3
"""Writes the shipped workflows, both formats, from one description each (scripts/dev/workflow_descriptions.py).

    .venv/bin/python scripts/dev/build_workflows.py          # write workflows/*.json and workflows/api/*.json
    .venv/bin/python scripts/dev/build_workflows.py --check  # exit 1 when a shipped file differs

workflows/<name>.json is the canvas (UI) format, served by ComfyUI as a template; workflows/api/<name>.json
is the API format for /prompt and scripts/queue. Model names are the files of the README's model table
(models/core/catalog.py). Example input images are in workflows/inputs/ (scripts/dev/make_example_inputs.py);
LoadImage finds them once they are in ComfyUI's input folder. The node definitions are read from the pack's
own classes, so a changed input list shows up here as a changed file (and in tests/test_workflows.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_descriptions import WORKFLOWS
from workflow_graph import CORE_NODES, Graph, core_node_def, node_def_from_class

PACK_NAME = "visionkit_pack"


def import_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    os.environ.setdefault("VISIONKIT_STANDALONE", "1")
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = mod
    spec.loader.exec_module(mod)
    return mod


def node_defs() -> dict:
    pack = import_pack()
    defs = {t: core_node_def(t) for t in CORE_NODES}
    for t, cls in pack.NODE_CLASS_MAPPINGS.items():
        defs[t] = node_def_from_class(t, cls, pack.NODE_DISPLAY_NAME_MAPPINGS[t])
    return defs


def download_url(folder: str, file: str) -> str | None:
    """The URL a single-file model of the catalogue (models/core/catalog.py) is fetched from, or None: not a
    file the downloader gives under that name, a folder model, or an archive."""
    import_pack()
    from visionkit_pack.models.core.catalog import CATALOG

    for m in CATALOG:
        if m.folder == folder and m.target == file and len(m.files) == 1 and not m.files[0].archive \
                and m.files[0].path == file:
            return m.files[0].url
    return None


def workflow_models(folder_keys, file: str) -> list[dict]:
    """The model metadata a workflow node carries for `file` picked from one of `folder_keys`: what the
    ComfyUI frontend's Missing Models panel reads from `node.properties.models` — the file name, its
    download URL and the folder (ComfyUI's folder name) it goes into. Empty when the catalogue has no URL."""
    import_pack()
    from visionkit_pack.models.core.folders import FOLDERS

    for key in folder_keys:
        # A dropdown that joins several folders names its files "<folder key>/<file>" (the pipeline loader).
        # The metadata names the file inside its folder: frontend 1.27 checks `name` against that folder's
        # files (a prefixed name would be reported missing although it is there); 1.58 matches entries to
        # widget values, so it ignores this one rather than mislead.
        plain = file[len(key) + 1:] if len(folder_keys) > 1 and file.startswith(key + "/") else file
        url = download_url(key, plain)
        if url:
            return [{"name": plain, "url": url, "directory": FOLDERS[key].folder}]
    return []


def add_model_metadata(ui: dict) -> dict:
    """Each loader node gets `properties.models`: for every model its dropdowns name, the file, download URL
    and ComfyUI folder from the pack's one catalogue (models/core/catalog.py: its files and download URLs). The
    frontend's Missing Models panel reads exactly this ({name, url, directory}; ComfyUI frontend 1.58
    `node.properties.models`) to offer the right file for the right folder. Generic: which widgets name
    models and which folders they list come from the nodes themselves (GET /visionkit/loaders' table)."""
    from visionkit_pack.nodes.routes import loaders_table

    pack = import_pack()
    table = loaders_table(pack.NODE_CLASS_MAPPINGS)
    for node in ui["nodes"]:
        inputs = table.get(node["type"])
        if not inputs:
            continue
        names = [i.name for i in node_defs_cache()[node["type"]].inputs if i.widget]
        values = dict(zip(names, node["widgets_values"]))  # loaders have no control_after_generate widgets
        models = [m for name, spec in inputs.items() if isinstance(values.get(name), str)
                  for m in workflow_models(spec["folders"], values[name])]
        if models:
            node["properties"]["models"] = models
    return ui


_DEFS: dict | None = None


def node_defs_cache() -> dict:
    global _DEFS
    if _DEFS is None:
        _DEFS = node_defs()
    return _DEFS


def build(name: str, defs: dict | None = None) -> tuple[dict, dict]:
    g = Graph(name, defs or node_defs_cache())
    WORKFLOWS[name](g)
    g.layout()
    return add_model_metadata(g.to_ui()), g.to_api()


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write (or --check) workflows/*.json and workflows/api/*.json.")
    ap.add_argument("--check", action="store_true", help="compare the shipped files with the descriptions")
    ap.add_argument("names", nargs="*", help="only these workflows")
    args = ap.parse_args(argv)
    defs = node_defs()
    stale = []
    for name in args.names or WORKFLOWS:
        ui, api = build(name, defs)
        for path, obj in ((ROOT / "workflows" / f"{name}.json", ui), (ROOT / "workflows" / "api" / f"{name}.json", api)):
            text = dumps(obj)
            if args.check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    stale.append(str(path.relative_to(ROOT)))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run scripts/dev/build_workflows.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
