"""T1 checks of the canvas extension that need no browser: the scripts parse and import only what the
page serves, the routes they call exist and answer what they read, the SAM node's preview files.

The browser tests (tests/test_t3_web.py) drive the same code in a real ComfyUI page.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import posixpath
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import ROOT, tiers

WEB = ROOT / "web"
SCRIPTS = sorted(WEB.rglob("*.js"))
IMPORT = re.compile(r"""^\s*import\s+(?:[\w*{}\s,]+\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)
SERVED_AS = "/extensions/ComfyUI-VisionKit/"  # ComfyUI serves WEB_DIRECTORY there (any folder name)


def frontend_static() -> Path | None:
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def test_there_are_scripts():
    names = {p.relative_to(WEB).as_posix() for p in SCRIPTS}
    assert {"js/visionkit.js", "js/sam_editor.js", "js/cache_panel.js", "js/missing_models.js"} <= names, names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(WEB).as_posix())
def test_script_parses_as_an_es_module(script, tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        tiers.missing("node", "node is not installed: the syntax check needs it (the T3 browser tests load the scripts)")
    copy = tmp_path / (script.stem + ".mjs")  # .mjs: node checks it as a module (imports, exports)
    copy.write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    res = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, f"{script} does not parse:\n{res.stderr}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(WEB).as_posix())
def test_script_imports_resolve_where_the_page_loads_them(script):
    """Relative imports only; siblings exist; the frontend's modules exist at the URL the import names."""
    here = SERVED_AS + script.relative_to(WEB).parent.as_posix() + "/"
    static = frontend_static()
    specs = IMPORT.findall(script.read_text(encoding="utf-8"))
    assert specs, f"{script} imports nothing?"
    for spec in specs:
        assert spec.startswith(("./", "../")), f"{script}: bare import {spec!r} cannot load in the browser"
        url = posixpath.normpath(posixpath.join(here, spec))
        if url.startswith(SERVED_AS):
            assert (WEB / url[len(SERVED_AS):]).is_file(), f"{script}: {spec!r} -> {url} is not in web/"
        else:
            assert url.startswith("/scripts/"), f"{script}: {spec!r} resolves to {url}, not the frontend's /scripts/"
            if static is not None:
                assert (static / url.lstrip("/")).is_file(), f"{script}: the frontend has no {url}"


def _route_table(routes_mod):
    from aiohttp import web

    table = web.RouteTableDef()
    routes_mod.add_routes(table)
    return {(r.method, r.path) for r in table}


def test_every_route_the_scripts_call_exists(pack):
    from visionkit_pack.nodes import routes

    served = _route_table(routes)
    called = set()
    for script in SCRIPTS:
        called |= set(re.findall(r"""["'`](/visionkit/[\w/]+)""", script.read_text(encoding="utf-8")))
    assert called, "the scripts call no VisionKit route?"
    paths = {p for _, p in served}
    assert called <= paths, f"routes the scripts call but the pack does not serve: {sorted(called - paths)}"
    assert ("POST", "/visionkit/cache/purge") in served and ("GET", "/visionkit/loaders") in served


def _client_calls(calls):
    """Run (method, path, body) requests against the pack's routes on a loopback aiohttp test server."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from visionkit_pack.nodes import routes

    async def go():
        app = web.Application()
        table = web.RouteTableDef()
        routes.add_routes(table)
        app.add_routes(table)
        out = []
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for method, path, body in calls:
                kw = {} if body is None else {"data": body if isinstance(body, (str, bytes)) else json.dumps(body)}
                r = await client.request(method, path, **kw)
                out.append((r.status, await r.json()))
        return out

    return asyncio.run(go())


def test_models_route_has_the_catalog_the_notice_shows(pack, models_dir):
    from visionkit_pack.models.core import catalog, folders

    [(status, table)] = _client_calls([("GET", "/visionkit/models", None)])
    assert status == 200 and set(table) == set(folders.FOLDERS)
    for key, row in table.items():
        assert {"folders", "files", "holds", "get", "folder", "catalog"} <= set(row), row
        assert [m["file"] for m in row["catalog"]] == [m.file for m in catalog.by_folder(key)]
        for m in row["catalog"]:
            assert {"file", "source", "licence", "used_by"} <= set(m)
    assert table["sams"]["folders"] == [str(models_dir / "sams")]
    assert "tiny_sam_vit.pth" in table["sams"]["files"]
    assert "sam_vit_b_01ec64.pth" in [m["file"] for m in table["sams"]["catalog"]]
    assert table["insightface"]["folder"] == "insightface/models"


def test_loaders_route_maps_every_loader_dropdown_to_its_folder(pack):
    [(status, loaders)] = _client_calls([("GET", "/visionkit/loaders", None)])
    assert status == 200
    assert loaders["VisionKitSAMLoader"] == {"model_name": {"folders": ["sams"], "files": 2}}, loaders
    assert loaders["VisionKitUpscaleModelLoader"]["model_name"]["folders"] == ["upscale_models"]
    assert loaders["VisionKitPipelineLoader"]["model_name"]["folders"] == ["checkpoints", "diffusers"]
    # every loader gets the help: each has at least one dropdown that lists a model folder
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        if cls.CATEGORY.endswith("/loaders"):
            assert node_id in loaders, (f"{node_id} has no model dropdown known to GET /visionkit/loaders: build "
                                        "it with nodes.common.model_combo (or give its options a 'vk_folder')")


def test_loaders_table_reads_vk_folder_options(pack):
    from visionkit_pack.nodes.routes import loaders_table

    class Fake:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ([], {"vk_folder": "loras"}), "b": (["x"], {"vk_folders": ["vae", "nope"]}),
                                 "c": ([], {}), "d": ("INT", {"default": 1})}}

    class Broken:
        @classmethod
        def INPUT_TYPES(cls):
            raise RuntimeError("boom")

    assert loaders_table({"Fake": Fake, "Broken": Broken}) == {
        "Fake": {"a": {"folders": ["loras"], "files": 0}, "b": {"folders": ["vae"], "files": 1}}}


def test_cache_routes_answer_what_the_panel_reads(pack, models_dir):
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.perception.sam import sam_spec

    spec = sam_spec(str(models_dir / "sams" / "tiny_sam_vit.pth"), "fp32")
    get_cache().load(spec)
    (s1, stats), = _client_calls([("GET", "/visionkit/cache", None)])
    assert s1 == 200 and len(stats["entries"]) == 1
    entry = stats["entries"][0]
    for k in ("key", "kind", "path", "device", "bytes", "hits", "loaded_at", "load_seconds", "dtype", "in_use"):
        assert k in entry, entry
    for k in ("bytes", "bytes_by_device", "hits", "misses", "load_seconds"):
        assert k in stats["totals"], stats["totals"]
    (s2, bad), (s3, one), (s4, rest) = _client_calls([
        ("POST", "/visionkit/cache/purge", {"keys": "not a list"}),
        ("POST", "/visionkit/cache/purge", {"keys": [entry["key"]]}),
        ("POST", "/visionkit/cache/purge", {}),
    ])
    assert s2 == 400 and "keys" in bad["error"]
    assert s3 == 200 and one["purged"] == [entry["key"]] and one["entries"] == []  # the panel renders this answer
    assert s4 == 200 and rest["purged"] == [] and rest["entries"] == []


def test_purge_route_answers_400_to_deep_json_and_caps_what_it_echoes(pack):
    """Issue 19: deeply nested JSON was a 500 (RecursionError); a 50 MB unknown key came back in full."""
    huge = "k" * 500_000  # (ComfyUI accepts bodies up to 100 MB; the test app 1 MB)
    (s1, deep), (s2, bytes_), (s3, echo), (s4, many) = _client_calls([
        ("POST", "/visionkit/cache/purge", "[" * 200_000 + "]" * 200_000),
        ("POST", "/visionkit/cache/purge", b"\xff\xfe{"),
        ("POST", "/visionkit/cache/purge", {"keys": [huge]}),
        ("POST", "/visionkit/cache/purge", {"keys": [f"nope{i}" for i in range(1000)]}),
    ])
    assert s1 == 400 and "nested too deeply" in deep["error"], deep
    assert s2 == 400 and "not JSON" in bytes_["error"], bytes_
    assert s3 == 200 and echo["unknown_count"] == 1 and len(json.dumps(echo)) < 2000, len(json.dumps(echo))
    assert echo["unknown"][0].startswith("kkk") and echo["unknown"][0].endswith("…")
    assert s4 == 200 and many["unknown_count"] == 1000 and len(many["unknown"]) == 20


# ---------------------------------------------------------------- the SAM node's preview on the canvas
def test_sam_segment_returns_a_plain_tuple_outside_comfyui(pack, models_dir):
    nodes = pack.NODE_CLASS_MAPPINGS
    (spec,) = nodes["VisionKitSAMLoader"]().load("tiny_sam_vit.pth")
    out = nodes["VisionKitSAMSegment"]().run(spec, torch.rand(1, 32, 48, 3), points='{"boxes": [[4, 4, 20, 20]]}')
    assert isinstance(out, tuple) and len(out) == 3


def test_preview_ui_writes_the_overlay_to_comfyuis_temp_folder(pack, monkeypatch, tmp_path):
    """With ComfyUI's folder_paths (a stand-in here; the real one in T3): PNGs equal to the IMAGE, type temp."""
    from visionkit_pack.models.core import host
    from visionkit_pack.nodes.preview import preview_ui, with_preview

    fake = types.ModuleType("folder_paths")
    fake.get_temp_directory = lambda: str(tmp_path)

    def get_save_image_path(prefix, out_dir, w=0, h=0):
        return str(Path(out_dir)), prefix, 1, "", prefix

    fake.get_save_image_path = get_save_image_path
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setattr(host, "in_comfyui", lambda: True)
    images = torch.rand(2, 20, 30, 3)
    ui = preview_ui(images, "VKTest")
    assert [i["type"] for i in ui["images"]] == ["temp", "temp"]
    names = [i["filename"] for i in ui["images"]]
    assert len(set(names)) == 2 and all(n.startswith("VKTest_") for n in names)
    for img, name in zip(images, names):
        got = np.asarray(Image.open(tmp_path / name))
        np.testing.assert_array_equal(got, (img * 255).round().to(torch.uint8).numpy())
    result = with_preview(("a",), images[:1])
    assert result["result"] == ("a",) and len(result["ui"]["images"]) == 1
    monkeypatch.setattr(host, "in_comfyui", lambda: False)
    assert with_preview(("a",), images) == ("a",)
