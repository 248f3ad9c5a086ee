"""The test-only workflow runner executes API-format workflows like ComfyUI's executor would."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vk_testing.runner import WorkflowError, WorkflowRunner


class Double:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {}), "factor": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 4.0})},
                "optional": {"mode": (["a", "b"], {})}}

    def run(self, image, factor, mode="a"):
        Double.calls += 1
        return ((image * factor).clamp(0, 1),)


class Readout:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image=None):
        return True

    def run(self, image):
        text = f"{tuple(image.shape)}"
        return {"ui": {"text": [text]}, "result": (text,)}


class Picky:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["x.pth"], {})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name):
        return True if name == "x.pth" else f"model {name!r} was not found"

    def run(self, name):
        return (name,)


@pytest.fixture()
def runner(tmp_path):
    Image.fromarray(np.full((6, 8, 4), 100, np.uint8), "RGBA").save(tmp_path / "in.png")
    Double.calls = 0
    return WorkflowRunner({"Double": Double, "Readout": Readout, "Picky": Picky}, tmp_path)


def test_runs_in_dependency_order_with_stand_ins(runner):
    wf = {
        "9": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "out"}},
        "5": {"class_type": "Double", "inputs": {"image": ["1", 0], "factor": 2.0}},
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "7": {"class_type": "Readout", "inputs": {"image": ["5", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    res = runner.run(wf)
    assert res.order.index("1") < res.order.index("5") < res.order.index("9")
    assert Double.calls == 1  # shared by two consumers, executed once
    saved = res.saved["9"][0]
    assert saved.shape == (1, 6, 8, 3)
    assert torch.allclose(saved, torch.full_like(saved, 200 / 255))
    assert res.previews["8"][0].shape == (1, 6, 8, 3)
    assert res.ui["7"] == {"text": ["(1, 6, 8, 3)"]} and res.outputs["7"] == ("(1, 6, 8, 3)",)
    mask = runner.run({"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                       "2": {"class_type": "Readout", "inputs": {"image": ["1", 0]}}})
    assert mask.outputs["1"][1].shape == (1, 6, 8)  # alpha became a mask


def test_nodes_not_needed_by_an_output_do_not_run(runner):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
          "2": {"class_type": "Double", "inputs": {"image": ["1", 0], "factor": 1.0}},
          "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert runner.run(wf).order == ["1", "3"] and Double.calls == 0


@pytest.mark.parametrize("wf, msg", [
    ({"1": {"class_type": "KSampler", "inputs": {}}}, "unknown node type 'KSampler'"),
    ({"1": {"class_type": "Double", "inputs": {"factor": 1.0}}}, "required input 'image' is missing"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
      "2": {"class_type": "Double", "inputs": {"image": ["1", 0], "factor": 9.0}},
      "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}, "outside"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
      "2": {"class_type": "Double", "inputs": {"image": ["1", 0], "factor": 1.0, "mode": "z"}},
      "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}, "not one of"),
    ({"1": {"class_type": "Picky", "inputs": {"name": "../y.pth"}}}, "was not found"),
    ({"1": {"class_type": "Readout", "inputs": {"image": ["4", 0]}}}, "missing node 4"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
      "2": {"class_type": "Readout", "inputs": {"image": ["1", 1]}}}, "wants IMAGE, got MASK"),
    ({"1": {"class_type": "Double", "inputs": {"image": ["2", 0], "factor": 1.0}},
      "2": {"class_type": "Double", "inputs": {"image": ["1", 0], "factor": 1.0}},
      "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, "cycle"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}}, "no output node"),
    ({"nodes": [], "links": []}, "UI-format"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}},
      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, "outside the input folder"),
])
def test_bad_workflows_fail_with_a_message_before_running(runner, wf, msg):
    with pytest.raises(WorkflowError, match=msg):
        runner.run(wf)
    assert Double.calls == 0


def test_runs_the_pack_nodes_loader_into_cache_info(pack):
    """A real VisionKit prompt: the loader's model shows up in the cache readout."""
    runner = WorkflowRunner(pack.NODE_CLASS_MAPPINGS)
    wf = {"1": {"class_type": "VisionKitUpscaleModelLoader",
                "inputs": {"model_name": "tiny_RealESRGAN_x4plus.pth", "dtype": "auto"}},
          "2": {"class_type": "VisionKitModelCacheInfo", "inputs": {"purge": False, "after": ["1", 0]}}}
    res = runner.run(wf)
    text = res.ui["2"]["text"][0]
    assert "1 model(s) cached" in text and "tiny_RealESRGAN_x4plus.pth" in text
    with pytest.raises(WorkflowError, match="tries to leave its model folder"):
        runner.run({**wf, "1": {**wf["1"], "inputs": {"model_name": "../sams/tiny_sam_vit.pth", "dtype": "auto"}}})
