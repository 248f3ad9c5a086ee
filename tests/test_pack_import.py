"""Importing the pack is cheap and loads none of the heavy libraries; every node is well-formed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from vk_testing import ROOT, import_pack

HEAVY = ("diffusers", "transformers", "segment_anything", "basicsr", "realesrgan", "insightface", "onnxruntime",
         "open_clip", "cv2")


def test_import_loads_no_heavy_library_and_is_fast():
    code = (
        "import importlib.util, json, sys, time\n"
        "import torch\n"
        "t = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('vk', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['vk'] = m; spec.loader.exec_module(m)\n"
        "dt = time.perf_counter() - t\n"
        f"heavy = sorted(k for k in sys.modules if k.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'heavy': heavy, 'nodes': sorted(m.NODE_CLASS_MAPPINGS), 'seconds': dt}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VISIONKIT_STANDALONE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [], f"importing the pack imported {res['heavy']}"
    assert res["nodes"], "no nodes registered"


def test_every_node_is_well_formed():
    pack = import_pack()
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("VisionKit"), node_id
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        name = pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert name.startswith("VisionKit ") and "_" not in name, name
        assert cls.CATEGORY.startswith("VisionKit/"), (node_id, cls.CATEGORY)
        assert getattr(cls, "DESCRIPTION", "").strip(), f"{node_id} has no DESCRIPTION"
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        assert isinstance(cls.RETURN_TYPES, tuple)
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        if getattr(cls, "OUTPUT_TOOLTIPS", None) is not None:
            assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), node_id


def test_design_ids_that_exist_keep_their_meaning():
    """IDs are public: the ones implemented so far must be present under these exact names."""
    pack = import_pack()
    implemented = (
        "VisionKitPipelineLoader", "VisionKitLoraLoader", "VisionKitControlNetLoader", "VisionKitCLIPLoader",
        "VisionKitGroundingDINOLoader", "VisionKitSAMLoader", "VisionKitUpscaleModelLoader",
        "VisionKitPromptEncode", "VisionKitCLIPZeroShot", "VisionKitGroundingDINODetect", "VisionKitSAMSegment",
        "VisionKitGroundedSAM", "VisionKitControlNetApply", "VisionKitCannyEdges", "VisionKitLCMSampler",
        "VisionKitUpscale", "VisionKitModelCacheInfo",
    )
    for node_id in implemented:
        assert node_id in pack.NODE_CLASS_MAPPINGS, node_id
    loaders = [k for k in implemented if k.endswith("Loader")]
    for node_id in loaders:  # loaders re-run when their file changes (DESIGN.md)
        assert hasattr(pack.NODE_CLASS_MAPPINGS[node_id], "IS_CHANGED"), node_id


def test_web_directory_exists():
    pack = import_pack()
    assert os.path.isdir(os.path.join(ROOT, pack.WEB_DIRECTORY))
    assert any(f.endswith(".js") for f in os.listdir(os.path.join(ROOT, pack.WEB_DIRECTORY, "js")))


def test_tests_run_from_a_folder_whose_name_is_not_a_module_name(tmp_path):
    """Users clone into `ComfyUI-VisionKit`. pytest would collect the repository root (it holds the pack's
    `__init__.py`) as a package and import it under the folder's name, which fails for a hyphenated name: every
    test errored with "attempted relative import with no known parent package". The root conftest.py keeps the
    root a plain folder; this runs one test file from such a copy."""
    import shutil

    dest = tmp_path / "ComfyUI-VisionKit"
    shutil.copytree(ROOT, dest, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "docs", "bench",
                                                  "workflows", "web", "*.jpg", "*.png"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONKIT_REQUIRE")}
    out = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_imageops.py"], cwd=dest, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert " passed" in out.stdout and "error" not in out.stdout.lower(), out.stdout[-2000:]
