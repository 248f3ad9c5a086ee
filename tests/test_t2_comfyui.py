"""T2: the pack inside a real ComfyUI server (COMFYUI_DIR, or ../shared/comfyui), over HTTP.

One server for the whole session (vk_testing.comfy_server.comfy): started with --cpu, the repository
linked as custom_nodes/ComfyUI-VisionKit, an extra_model_paths.yaml pointing every VisionKit folder at
the tiny models. Tests that need a model nobody loaded before copy a tiny file under a fresh name into
the server's own models/upscale_models, so ComfyUI's output cache (which keeps a loader's result while
its inputs are unchanged) cannot make a load silently not happen, whatever ran before.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from vk_testing import import_pack
from vk_testing.comfy_server import PACK_FOLDER, comfy  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.t2

PACK = import_pack()
TINY_X4 = "tiny_RealESRGAN_x4plus.pth"


def cache_prompt(model_name: str, dtype: str = "auto", purge: bool = False) -> dict:
    """Load an upscale model, then read the cache (an output node, so the prompt executes)."""
    return {
        "1": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": model_name, "dtype": dtype}},
        "2": {"class_type": "VisionKitModelCacheInfo", "inputs": {"purge": purge, "after": ["1", 0]}},
    }


def fresh_model(comfy, source: str = f"upscale_models/{TINY_X4}") -> str:  # noqa: F811
    """A copy of a tiny model under a new name in the server's own models/upscale_models."""
    name = f"t2_{uuid.uuid4().hex[:10]}{os.path.splitext(source)[1]}"
    dest = comfy.base_dir / "models" / "upscale_models"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(comfy.models_dir / source, dest / name)
    return name


def cache_entries(comfy) -> list[dict]:  # noqa: F811
    return comfy.get_json("/visionkit/cache")["entries"]


def paths_cached(comfy) -> list[str]:  # noqa: F811
    return [os.path.basename(e["path"]) for e in cache_entries(comfy)]


def all_strings(obj) -> str:
    return json.dumps(obj, default=str)


# ---------------------------------------------------------------- registration
def test_object_info_lists_every_visionkit_node(comfy):  # noqa: F811
    info = comfy.get_json("/object_info")
    missing = sorted(set(PACK.NODE_CLASS_MAPPINGS) - set(info))
    assert not missing, f"nodes of the pack missing from /object_info: {missing}\n{comfy.log_tail()}"
    for node_id in PACK.NODE_CLASS_MAPPINGS:
        assert node_id.startswith("VisionKit")
        entry = info[node_id]
        assert entry["display_name"] == PACK.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert PACK_FOLDER in entry["python_module"], entry["python_module"]
    assert info["VisionKitModelCacheInfo"]["output_node"] is True
    # the loader's dropdown lists the tiny models that extra_model_paths.yaml points at
    names = info["VisionKitUpscaleModelLoader"]["input"]["required"]["model_name"][0]
    assert TINY_X4 in names and "nested/tiny_srvgg_x2.pth" in names, names


def test_log_shows_the_pack_imported(comfy):  # noqa: F811
    log = comfy.log()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    assert not failed, "ComfyUI could not import the pack:\n" + "\n".join(failed) + "\n--- log ---\n" + log[-6000:]
    loaded = [line for line in log.splitlines() if "seconds" in line and line.rstrip().endswith(PACK_FOLDER)]
    assert loaded, "the pack is not in ComfyUI's custom-node import times:\n" + log[-6000:]
    startup = log.split("got prompt")[0]  # later tests' failing prompts (on purpose) log their own tracebacks
    tracebacks = [b for b in startup.split("Traceback (most recent call last)")[1:] if PACK_FOLDER in b]
    assert not tracebacks, "a traceback through the pack in the start-up log:\n" + tracebacks[0][:4000]


def test_model_folders_route_and_folder_paths(comfy):  # noqa: F811
    table = comfy.get_json("/visionkit/models")
    assert set(table) == set(PACK.models.core.folders.FOLDERS), sorted(table)
    real = os.path.realpath
    for key, spec in PACK.models.core.folders.FOLDERS.items():
        row = table[key]
        assert {"folders", "files", "holds", "get"} <= set(row), row
        folders = [real(p) for p in row["folders"]]
        sub = os.path.join(spec.folder, spec.subdir) if spec.subdir else spec.folder
        # the yaml's folder (tiny models) is kept, and the pack's default under ComfyUI's models dir is added
        assert real(os.path.join(comfy.models_dir, sub)) in folders, (key, row["folders"])
        assert real(os.path.join(comfy.base_dir, "models", sub)) in folders, (key, row["folders"])
    assert TINY_X4 in table["upscale_models"]["files"]
    assert "tiny_sam_vit.pth" in table["sams"]["files"]
    # ComfyUI's own folder_paths knows the pack's keys and still lists the yaml's files
    assert set(PACK.models.core.folders.FOLDERS) <= set(comfy.get_json("/models"))
    assert TINY_X4 in comfy.get_json("/models/upscale_models")


# ---------------------------------------------------------------- the cache over HTTP
def test_cache_route_shape(comfy):  # noqa: F811
    stats = comfy.get_json("/visionkit/cache")
    assert isinstance(stats["entries"], list)
    for k in ("bytes_by_device", "hits", "misses", "load_seconds"):
        assert k in stats["totals"], stats["totals"]


def test_loaded_model_is_listed_and_released_by_free(comfy):  # noqa: F811
    name = fresh_model(comfy)
    hist = comfy.run_prompt(cache_prompt(name))
    summary = hist["outputs"]["2"]["text"][0]
    assert name in summary, summary
    entries = [e for e in cache_entries(comfy) if os.path.basename(e["path"]) == name]
    assert len(entries) == 1, cache_entries(comfy)
    e = entries[0]
    for k in ("key", "kind", "path", "device", "bytes", "hits", "loaded_at"):
        assert k in e, e
    assert e["kind"] == "upscale" and e["device"] == "cpu" and e["bytes"] > 0, e

    # /free only sets flags; the worker thread unloads (ComfyUI's unload_all_models), and the pack then
    # drops every entry: poll (the harness posts again if the worker missed the wake-up, see free())
    comfy.free(until=lambda: not cache_entries(comfy))

    # the server still works and the same model loads again (ComfyUI's output cache was reset by /free)
    hist = comfy.run_prompt(cache_prompt(name))
    assert name in paths_cached(comfy), hist["outputs"]


def test_purge_route_empties_the_cache(comfy):  # noqa: F811
    a, b = fresh_model(comfy), fresh_model(comfy, "upscale_models/tiny_realesr-general-x4v3.safetensors")
    comfy.run_prompt(cache_prompt(a))
    comfy.run_prompt(cache_prompt(b))
    listed = {os.path.basename(e["path"]): e["key"] for e in cache_entries(comfy)}
    assert a in listed and b in listed, listed

    out = comfy.post_json("/visionkit/cache/purge", {"keys": [listed[a]]})  # some entries
    assert out["purged"] == [listed[a]], out
    assert a not in paths_cached(comfy) and b in paths_cached(comfy)

    out = comfy.post_json("/visionkit/cache/purge", {})  # everything
    assert listed[b] in out["purged"], out
    assert cache_entries(comfy) == []

    status, body = comfy.request("POST", "/visionkit/cache/purge", {"keys": "not a list"})
    assert status == 400 and "error" in body, (status, body)


def test_cache_info_node_purge_option(comfy):  # noqa: F811
    name = fresh_model(comfy)
    comfy.run_prompt(cache_prompt(name))
    assert name in paths_cached(comfy)
    hist = comfy.run_prompt(cache_prompt(name, purge=True))
    assert hist["outputs"]["2"]["text"][0].startswith("0 model(s) cached"), hist["outputs"]
    assert name not in paths_cached(comfy), cache_entries(comfy)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, message", [
    ("../../etc/passwd", "tries to leave its model folder"),
    ("/etc/passwd", "is an absolute path"),
    ("no_such_model.pth", "was not found in the upscale_models folder"),
])
def test_bad_model_name_is_rejected_by_prompt(comfy, bad, message):  # noqa: F811
    status, body = comfy.submit(cache_prompt(bad))
    assert status == 400, (status, body)
    assert "1" in body["node_errors"], body
    assert message in all_strings(body["node_errors"]["1"]), body["node_errors"]
    # the server lives on and answers the next prompt
    comfy.run_prompt(cache_prompt(TINY_X4))


def test_wrong_kind_of_file_fails_the_node_not_the_server(comfy):  # noqa: F811
    name = fresh_model(comfy, "sams/tiny_sam_vit.pth")  # a SAM checkpoint picked in the upscale loader
    hist = comfy.run_prompt(cache_prompt(name), expect_success=False)
    assert hist["status"]["status_str"] == "error"
    text = all_strings(hist["status"]["messages"])
    assert "is not an upscale model" in text and "SAM" in text, text[:3000]
    # what the page shows above the message: a short, stable type, not the pack folder's path
    (error,) = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"]
    assert error["exception_type"] == "visionkit.UpscaleModelError", error["exception_type"]
    assert error["exception_message"].splitlines()[0].strip(), error["exception_message"]
    assert name not in paths_cached(comfy)
    comfy.run_prompt(cache_prompt(TINY_X4))
