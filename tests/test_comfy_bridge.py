"""The cache inside ComfyUI's memory management, with the real comfy.model_management (no server).

Runs in a subprocess that imports ComfyUI's modules from COMFYUI_DIR (or ../shared/comfyui) the way
ComfyUI's main does, then the pack, and checks the documented mechanism (models/core/comfy_bridge.py):
a used model is managed by ComfyUI; an unload for memory pressure keeps it cached; unload_all_models
(what /free runs) leaves the pack holding nothing, and the module is really freed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vk_testing import ROOT, import_pack, tiers


def comfyui_dirs() -> list:
    """Every ComfyUI version the tests use (vk_testing.comfy_checkouts.find_comfyui_dirs), as pytest params."""
    from vk_testing.comfy_checkouts import ComfyUINotFound, comfyui_version, find_comfyui_dirs

    try:
        dirs = [d for d in find_comfyui_dirs() if (d / "comfy" / "model_management.py").exists()]
    except ComfyUINotFound:
        dirs = []
    return [pytest.param(d, id=f"comfyui-{comfyui_version(d)}") for d in dirs] or [pytest.param(None, id="none")]


SCRIPT = r"""
import gc, json, sys, weakref, importlib.util
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, COMFY)
import comfy.options; comfy.options.enable_args_parsing()
import folder_paths
import comfy.model_management as mm
folder_paths.add_model_folder_path("upscale_models", MODELS + "/upscale_models")
spec = importlib.util.spec_from_file_location("vkpack", ROOT + "/__init__.py", submodule_search_locations=[ROOT])
pack = importlib.util.module_from_spec(spec); sys.modules["vkpack"] = pack; spec.loader.exec_module(pack)
from vkpack.models.core.cache import get_cache
out = {"in_comfyui": __import__("vkpack.models.core.host", fromlist=["x"]).in_comfyui()}
loader = pack.NODE_CLASS_MAPPINGS["VisionKitUpscaleModelLoader"]()
(handle,) = loader.load("tiny_RealESRGAN_x4plus.pth", "auto")
cache = get_cache()
out["bridge"] = cache.bridge is not None and cache.bridge.wrapped
with cache.use(handle) as net:
    ref = weakref.ref(net)
    out["managed"] = [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]
del net
# memory pressure: ComfyUI unloads one model to its offload device; the pack keeps it cached
lm = [m for m in mm.current_loaded_models if type(m.model.model).__name__ == "VisionKitModel"][0]
lm.model_unload(); mm.current_loaded_models.remove(lm); del lm
out["after_pressure"] = len(cache)
with cache.use(handle) as net2:  # used again: no new file read, ComfyUI manages it again
    out["same_object"] = net2 is ref()
del net2
out["misses"] = cache.stats()["totals"]["misses"]
# what POST /free runs in the worker:
mm.unload_all_models(); gc.collect()
out["after_free"] = len(cache)
out["module_freed"] = ref() is None
out["managed_after"] = [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]

# memory_required: every load asks ComfyUI for the model's working memory beside its weights
asked = []
real_load = mm.load_models_gpu
def recording_load(models, *args, **kwargs):
    asked.append(kwargs.get("memory_required", args[0] if args else 0))
    return real_load(models, *args, **kwargs)
mm.load_models_gpu = recording_load
bridge = cache.bridge
with cache.use(handle) as net3:
    ref3 = weakref.ref(net3)
del net3
out["memory_required"] = asked
out["expected_required"] = __import__("vkpack.models.core.comfy_bridge", fromlist=["x"]).working_memory("upscale", 0)

# something replaces unload_all_models behind the pack's back (another custom node, a reload) ...
plain = mm.unload_all_models.__wrapped__
def replaced():
    return plain()
mm.unload_all_models = replaced
out["in_place_after_replace"] = bridge.wrap_in_place()
# ... and /free runs the replacement: the ON_DETACH fallback marks the entry released, the next use drops it
mm.unload_all_models(); gc.collect()
out["released"] = [e.released for e in cache._entries.values()]
misses = cache.stats()["totals"]["misses"]
with cache.use(handle) as net4:  # the next use: the released entry goes, a fresh load, and the wrap is back
    out["fresh_load"] = cache.stats()["totals"]["misses"] == misses + 1 and net4 is not ref3()
del net4
gc.collect()
out["old_module_freed"] = ref3() is None
out["in_place_after_use"] = bridge.wrap_in_place() and mm.unload_all_models is not replaced
mm.unload_all_models(); gc.collect()
out["after_second_free"] = len(cache)
# a wrapper of the pack's wrapper that says so (__wrapped__) keeps it in place: no second wrap
ours = mm.unload_all_models
def polite(*a, **k):
    return ours(*a, **k)
polite.__wrapped__ = ours
mm.unload_all_models = polite
out["polite_in_place"] = bridge.ensure_wrapped() and mm.unload_all_models is polite
mm.load_models_gpu = real_load
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module", params=comfyui_dirs())
def bridge_run(request, models_dir):
    """The script's results (one subprocess per ComfyUI version for the tests below)."""
    comfy = request.param
    if comfy is None:
        tiers.missing("T2", "no ComfyUI checkout: set COMFYUI_DIR or put the snapshot at ../shared/comfyui")
    code = f"COMFY={str(comfy)!r}; MODELS={str(models_dir)!r}; ROOT={str(ROOT)!r}\n" + SCRIPT
    env = {k: v for k, v in os.environ.items() if k != "VISIONKIT_STANDALONE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(models_dir))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][6:])


def test_comfy_memory_management_and_free(bridge_run):
    out = bridge_run
    assert out["in_comfyui"] and out["bridge"]
    assert "VisionKitModel" in out["managed"]  # ComfyUI accounts for the pack's model
    assert out["after_pressure"] == 1 and out["same_object"] and out["misses"] == 1
    assert out["after_free"] == 0  # the pack holds nothing after /free
    assert out["module_freed"]  # ... so the memory really returns
    assert "VisionKitModel" not in out["managed_after"]


def test_bridge_loads_ask_for_working_memory_and_survive_a_replaced_unload(bridge_run):
    out = bridge_run
    assert out["memory_required"] and set(out["memory_required"]) == {out["expected_required"]}
    assert out["expected_required"] >= 2**30
    assert out["in_place_after_replace"] is False
    assert out["released"] == [True]  # the fallback engaged for the unload that bypassed the wrap
    assert out["fresh_load"] and out["old_module_freed"]
    assert out["in_place_after_use"]  # wrapped again at the next load
    assert out["after_second_free"] == 0  # and /free purges at once again
    assert out["polite_in_place"]


def test_working_memory_estimates():
    import_pack()
    from visionkit_pack.models.core.comfy_bridge import GiB, working_memory

    assert working_memory("sd_pipeline", 2 * GiB) == int(1.5 * GiB)  # the floor
    assert working_memory("sd_pipeline", 6 * GiB) == 3 * GiB  # half the weights (SDXL in fp32)
    assert working_memory("sam", 2 * GiB) == GiB
    assert working_memory("sd_lora", 10**9) == 0  # runs inside the pipeline's run: nothing of its own
