"""The README's node reference table and Workflows section are in step with the code.

scripts/dev/readme_tables.py writes both (inputs/outputs from the node classes); this fails when a node was
added, renamed or changed its inputs without the README following, and checks the table against the registry
independently of the script.
"""
from __future__ import annotations

import re

from vk_testing import ROOT, dev_script, import_pack


def test_readme_is_what_the_generator_writes():
    mod = dev_script("readme_tables")
    assert mod.main(["--check"]) == 0


def test_node_table_lists_the_registry():
    pack = import_pack()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(VisionKit\w+)` \| ([^|]+) \| ((?:[^|\\]|\\.)+) \| (.+) \|$", readme, re.MULTILINE)
    assert [r[0] for r in rows] == list(pack.NODE_CLASS_MAPPINGS), "README node table ≠ nodes/__init__.py registry"
    for node_id, display, what, io in rows:
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        assert display.strip() == pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert what.strip(), node_id
        ins, outs = io.split(" → ")
        types = cls.INPUT_TYPES()
        assert re.findall(r"`(\w+)`", ins) == list(types.get("required", {})) + list(types.get("optional", {}))
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        assert re.findall(r"`(\w+)`", outs) == list(names), node_id


def test_every_shipped_workflow_has_a_readme_entry_and_screenshot():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for p in sorted((ROOT / "workflows").glob("*.json")):
        assert f"workflows/api/{p.stem}.json" in readme, p.stem
        shot = f"docs/screenshots/workflow_{p.stem}.png"
        assert shot in readme and (ROOT / shot).is_file(), f"{shot} is missing (scripts/dev/update_screenshots)"
        assert p.with_suffix(".jpg").is_file(), f"no Templates-dialog thumbnail {p.with_suffix('.jpg').name}"
