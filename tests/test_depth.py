"""Depth: the depth-model loader and VisionKit Depth Map, compared with transformers' `pipeline("depth-estimation")`
on the same tiny Depth Anything V2 (DINOv2 backbone) and DPT folders."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

DA = "tiny-depth-anything"
DPT = "tiny-dpt"


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture()
def dm(pack):
    from visionkit_pack.models.perception import depth

    return depth


def photo(h=60, w=90, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, h // 6 + 1, w // 6 + 1, 3, generator=g)
    return torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                           align_corners=False).permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def load(nodes, name=DA):
    return nodes["VisionKitDepthLoader"]().load(name, "fp32")[0]


def pipe_result(models_dir, name, img):
    from transformers import pipeline

    p = pipeline("depth-estimation", model=str(models_dir / "depth" / name), device="cpu")
    pil = Image.fromarray((img * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    return p(pil)


@pytest.mark.parametrize("name", [DA, DPT])
def test_depth_equals_the_transformers_pipeline(nodes, models_dir, name):
    img = photo(b=2)
    depth_image, raw = nodes["VisionKitDepthEstimate"]().estimate(load(nodes, name), img)
    assert depth_image.shape == (2, 60, 90, 3) and raw.shape == (2, 60, 90)
    for i in range(2):
        ref = pipe_result(models_dir, name, img[i])
        assert torch.allclose(raw[i], ref["predicted_depth"].float(), atol=1e-5, rtol=1e-5), \
            float((raw[i] - ref["predicted_depth"]).abs().max())
        want = np.asarray(ref["depth"])  # the pipeline's picture: (d - min) / (max - min) * 255, truncated
        got = (depth_image[i, ..., 0] * 255).numpy().astype(np.uint8)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert (got == want).mean() > 0.99
        assert torch.equal(depth_image[i, ..., 0], depth_image[i, ..., 2])  # gray in 3 channels
    assert float(depth_image.min()) == 0.0 and float(depth_image.max()) == 1.0
    assert not torch.equal(raw[0], raw[1])  # two images, two maps


def test_near_is_bright_and_metric_models_are_inverted(dm):
    raw = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    img = dm.depth_image(raw)
    assert img[0, 1, 1, 0] == 1.0 and img[0, 0, 0, 0] == 0.0 and abs(float(img[0, 0, 1, 0]) - 0.25) < 1e-7
    inv = dm.depth_image(raw, metric=True)  # metres: the smallest distance is the nearest, so brightest
    assert inv[0, 0, 0, 0] == 1.0 and inv[0, 1, 1, 0] == 0.0
    flat = dm.depth_image(torch.full((1, 3, 4), 2.5))
    assert float(flat.abs().max()) == 0.0  # a flat map is defined (black), not NaN


def test_resolution_changes_what_the_model_sees(nodes, models_dir):
    img = photo(seed=2)
    node = nodes["VisionKitDepthEstimate"]()
    spec = load(nodes)
    _i, raw0 = node.estimate(spec, img, 0)
    _i, raw1 = node.estimate(spec, img, 112)
    assert raw1.shape == raw0.shape and not torch.allclose(raw0, raw1)
    from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

    folder = str(models_dir / "depth" / DA)
    proc, model = AutoImageProcessor.from_pretrained(folder), DepthAnythingForDepthEstimation.from_pretrained(folder)
    rgb = (img[0] * 255).round().to(torch.uint8).numpy()
    with torch.no_grad():
        out = model(**proc(images=rgb, size={"height": 112, "width": 112}, return_tensors="pt"))
    ref = proc.post_process_depth_estimation(out, [(60, 90)])[0]["predicted_depth"]
    assert torch.allclose(raw1[0], ref, atol=1e-5)


def test_loader_is_cached_and_says_what_a_wrong_folder_is(nodes, dm, models_dir, tmp_path, monkeypatch):
    from visionkit_pack.models.core.cache import get_cache

    a, b = load(nodes), load(nodes)
    assert a == b and get_cache().stats()["totals"]["misses"] == 1
    other = tmp_path / "depth"
    shutil.copytree(models_dir / "pose" / "tiny-vitpose", other / "pose-in-depth")
    (other / "broken").mkdir()
    (other / "broken" / "config.json").write_text("{not json")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(dm.DepthError, match="ViTPose.*models/pose"):
        nodes["VisionKitDepthLoader"]().load("pose-in-depth")
    with pytest.raises(dm.DepthError, match="config.json"):
        nodes["VisionKitDepthLoader"]().load("broken")
    msg = nodes["VisionKitDepthLoader"].VALIDATE_INPUTS(model_name="Depth-Anything-V2-Small-hf")
    assert isinstance(msg, str) and "Depth-Anything-V2-Small-hf" in msg and "depth" in msg


def test_validate_inputs(nodes):
    v = nodes["VisionKitDepthEstimate"].VALIDATE_INPUTS
    assert v(resolution=0) is True and v(resolution=518) is True and v() is True
    assert "resolution" in v(resolution=5) and "resolution" in v(resolution=99999)
