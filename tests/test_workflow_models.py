"""Model metadata in the shipped workflows: what the frontend's Missing Models panel reads.

ComfyUI's frontend (1.27 and 1.58 alike) reads a node's `properties.models`, a list of {name, url,
directory}: 1.27 checks each against the files of that folder when a workflow opens, 1.58 offers the URL
for a model its scan finds missing. scripts/dev/build_workflows.py writes it from the model catalogue's download
URLs (models/core/catalog.py); here the files are checked against that source, entry by entry.
"""
from __future__ import annotations

import pytest
from vk_testing import dev_script, import_pack
from vk_testing import workflows as W

PACK = import_pack()
BUILD = dev_script("build_workflows")


def _model_widgets(node: dict) -> dict:
    """{input name: value} of a loader node's model dropdowns (GET /visionkit/loaders' table)."""
    from visionkit_pack.nodes.routes import loaders_table

    table = loaders_table(PACK.NODE_CLASS_MAPPINGS).get(node["type"], {})
    if not table:
        return {}
    spec = PACK.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
    widget_types = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
    names = [n for sec in ("required", "optional") for n, v in (spec.get(sec) or {}).items()
             if (isinstance(v[0], list) or v[0] in widget_types) and not (len(v) > 1 and v[1].get("forceInput"))]
    values = dict(zip(names, node["widgets_values"]))
    return {n: (values[n], table[n]["folders"]) for n in table if n in values}


@pytest.mark.parametrize("name", W.names())
def test_every_model_with_a_known_url_is_declared(name):
    from visionkit_pack.models.core.folders import FOLDERS

    download_url = BUILD.download_url

    declared_somewhere = 0
    for node in W.load_ui(name)["nodes"]:
        widgets = _model_widgets(node)
        declared = node.get("properties", {}).get("models", [])
        expected = []
        for value, keys in widgets.values():
            for key in keys:
                plain = value[len(key) + 1:] if len(keys) > 1 and value.startswith(key + "/") else value
                url = download_url(key, plain)
                if url:
                    expected.append({"name": plain, "url": url, "directory": FOLDERS[key].folder})
                    break
        assert declared == expected, (name, node["type"], declared, expected)
        for m in declared:
            assert set(m) == {"name", "url", "directory"} and m["url"].startswith("https://"), m
        declared_somewhere += len(declared)
    # These two name only folder models (transformers folders), which the frontend's panel cannot download.
    assert declared_somewhere or name in ("clip_zero_shot", "most_similar_image"), \
        f"{name}: no model carries a download URL"


def test_catalog_urls_come_from_the_catalogue():
    download_url, workflow_models = BUILD.download_url, BUILD.workflow_models

    assert download_url("sams", "sam_vit_b_01ec64.pth") == \
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert download_url("sams", "not_a_catalog_file.pth") is None
    assert download_url("insightface", "antelopev2") is None  # an archive: no single file to offer
    (m,) = workflow_models(["checkpoints", "diffusers"], "checkpoints/v1-5-pruned-emaonly.safetensors")
    assert m["name"] == "v1-5-pruned-emaonly.safetensors" and m["directory"] == "checkpoints"
