"""The cache inside ComfyUI's memory management, with the real comfy.model_management (no server).

Runs in a subprocess that imports ComfyUI's modules from COMFYUI_DIR (or ../shared/comfyui) the way
ComfyUI's main does, then the pack, and checks the documented mechanism (models/comfy_bridge.py):
a used model is managed by ComfyUI; an unload for memory pressure keeps it cached; unload_all_models
(what /free runs) leaves the pack holding nothing, and the module is really freed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vk_testing import ROOT, tiers


def comfyui_dir() -> Path | None:
    env = os.environ.get("COMFYUI_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "comfyui"]:
        if (cand / "comfy" / "model_management.py").exists():
            return cand
    return None


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
from vkpack.models.cache import get_cache
out = {"in_comfyui": __import__("vkpack.models.host", fromlist=["x"]).in_comfyui()}
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
print("RESULT" + json.dumps(out))
"""


def test_comfy_memory_management_and_free(models_dir):
    comfy = comfyui_dir()
    if comfy is None:
        tiers.missing("T2", "no ComfyUI checkout: set COMFYUI_DIR or put the snapshot at ../shared/comfyui")
    code = f"COMFY={str(comfy)!r}; MODELS={str(models_dir)!r}; ROOT={str(ROOT)!r}\n" + SCRIPT
    env = {k: v for k, v in os.environ.items() if k != "VISIONKIT_STANDALONE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(models_dir))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][6:])
    assert out["in_comfyui"] and out["bridge"]
    assert "VisionKitModel" in out["managed"]  # ComfyUI accounts for the pack's model
    assert out["after_pressure"] == 1 and out["same_object"] and out["misses"] == 1
    assert out["after_free"] == 0  # the pack holds nothing after /free
    assert out["module_freed"]  # ... so the memory really returns
    assert "VisionKitModel" not in out["managed_after"]
