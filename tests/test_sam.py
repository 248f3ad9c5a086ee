"""SAM: loader architecture detection, and masks/scores equal to segment-anything's SamPredictor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.perception import sam as S  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402


def test_arch_detected_from_fixture_and_from_real_sizes(pack, models_dir):
    from visionkit_pack.models.core.weights import load_state_dict

    sd = load_state_dict(str(models_dir / "sams" / "tiny_sam_vit.pth"))
    arch = S.detect_arch(sd)
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.global_attn) == (32, 2, 2, (1,))
    # the real registry sizes, built on the meta device (shapes only, no memory)
    real = {"vit_b": (768, 12, 12, (2, 5, 8, 11)), "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
            "vit_h": (1280, 32, 16, (7, 15, 23, 31))}
    for name, (dim, depth, heads, glob) in real.items():
        with torch.device("meta"):
            model = S.build_sam(S.SamArch(dim, depth, heads, glob))
        got = S.detect_arch(model.state_dict(), name)
        assert (got.name, got.embed_dim, got.depth, got.num_heads, got.global_attn) == (name, dim, depth, heads, glob)


@pytest.mark.parametrize("extra, msg", [
    ({"mask_decoder.hf_token.weight": torch.zeros(1)}, "HQ-SAM"),
    ({"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}, "SAM 2"),
])
def test_variant_checkpoints_get_not_supported_messages(extra, msg):
    with pytest.raises(S.SamModelError, match=msg + ".*not supported yet"):
        S.detect_arch({"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), **extra}, "x.pth")
    with pytest.raises(S.SamModelError, match="MobileSAM"):
        S.detect_arch({"image_encoder.layers.0.blocks.0.attn.qkv.weight": torch.zeros(1)}, "mobile_sam.pt")


def test_loader_refuses_a_real_esrgan_file(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    assert nodes["VisionKitSAMLoader"].VALIDATE_INPUTS("tiny_sam_vit.pth") is True
    from visionkit_pack.models.core import folders

    path = folders.resolve("upscale_models", "tiny_RealESRGAN_x4plus.pth")
    with pytest.raises(S.SamModelError, match="not a segment-anything checkpoint"):
        get_cache().load(S.sam_spec(path))
    assert len(get_cache()) == 0
    assert "was not found" in nodes["VisionKitSAMLoader"].VALIDATE_INPUTS("sam_vit_h_4b8939.pth")


@pytest.fixture()
def sam_setup(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    (spec,) = nodes["VisionKitSAMLoader"]().load("tiny_sam_vit.pth", "fp32")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 48, 64, 3, generator=g)
    image[:, 10:30, 20:45] = torch.tensor([0.9, 0.2, 0.1])  # a red block
    return nodes, spec, image


def reference(spec, image_hwc, **predict_kwargs):
    """segment-anything's own SamPredictor on the same weights and uint8 image."""
    from segment_anything import SamPredictor

    with get_cache().use(spec) as sam:
        p = SamPredictor(sam)
        p.set_image(S._to_uint8_rgb(image_hwc), image_format="RGB")
        masks, scores, _ = p.predict(**predict_kwargs)
    return masks, scores


def count_encoder_calls(spec):
    with get_cache().use(spec) as sam:
        calls = []
        handle = sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_boxes_match_sam_predictor_and_encode_once(sam_setup):
    nodes, spec, image = sam_setup
    boxes = [[18, 8, 47, 32], [0, 0, 30, 20], [30, 20, 64, 48], [5, 25, 25, 45]]
    calls, handle = count_encoder_calls(spec)
    try:
        mask, preview, report = nodes["VisionKitSAMSegment"]().run(
            spec, image, output="per object", points=json.dumps({"boxes": boxes}))
    finally:
        handle.remove()
    assert len(calls) == 1, "the image must be encoded once for all prompts"
    assert mask.shape == (4, 48, 64) and preview.shape == (1, 48, 64, 3)
    rep = json.loads(report)[0]
    for j, box in enumerate(boxes):
        ref_masks, ref_scores = reference(spec, image[0], box=np.array(box), multimask_output=True)
        best = int(np.argmax(ref_scores))
        assert rep[j]["scores"][0] == pytest.approx(float(ref_scores[best]), abs=1e-4)
        agree = (mask[j].numpy() > 0.5) == ref_masks[best]
        assert agree.mean() > 0.999, f"box {j}: {agree.mean():.4f} of pixels agree"


def test_points_include_exclude_match_predictor(sam_setup):
    nodes, spec, image = sam_setup
    pts = [[30, 20, 1], [5, 5, 0], [50, 40, 1]]
    mask, _, report = nodes["VisionKitSAMSegment"]().run(spec, image, multimask="all", output="per object",
                                                         points=json.dumps({"points": pts}))
    ref_masks, ref_scores = reference(spec, image[0], point_coords=np.array([p[:2] for p in pts], float),
                                      point_labels=np.array([p[2] for p in pts]), multimask_output=True)
    rep = json.loads(report)[0]
    assert len(rep) == 1 and rep[0]["prompt"] == "points"
    np.testing.assert_allclose(rep[0]["scores"], ref_scores, atol=1e-4)
    union = ref_masks.any(axis=0)
    assert ((mask[0].numpy() > 0.5) == union).mean() > 0.999


def test_vk_boxes_per_image_batch_and_points_inside_boxes(sam_setup):
    nodes, spec, image = sam_setup
    batch = torch.cat([image, image.flip(2)])
    vk_boxes = [[{"box": [18, 8, 47, 32], "score": 0.9, "label": "block"}],
                [{"box": [17, 8, 46, 32], "score": 0.8, "label": "block"}, {"box": [0, 0, 10, 10], "score": 0.5,
                                                                            "label": "corner"}]]
    points = json.dumps({"points": [[30, 20, 1]]})  # inside the first box of both images
    calls, handle = count_encoder_calls(spec)
    try:
        mask, preview, report = nodes["VisionKitSAMSegment"]().run(spec, batch, boxes=vk_boxes, points=points)
    finally:
        handle.remove()
    assert len(calls) == 2 and mask.shape == (2, 48, 64) and preview.shape == (2, 48, 64, 3)
    rep = json.loads(report)
    assert [len(r) for r in rep] == [1, 2]
    assert rep[0][0]["points"] == [[30.0, 20.0, 1]] and rep[1][1]["points"] == []
    ref_masks, ref_scores = reference(spec, batch[0], box=np.array([18, 8, 47, 32]),
                                      point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]),
                                      multimask_output=True)
    assert rep[0][0]["box"] == [18.0, 8.0, 47.0, 32.0]
    best = int(np.argmax(ref_scores))
    assert rep[0][0]["scores"][0] == pytest.approx(float(ref_scores[best]), abs=1e-4)
    assert ((mask[0].numpy() > 0.5) == ref_masks[best]).mean() > 0.999


def test_no_prompt_is_an_empty_mask_without_encoding(sam_setup):
    nodes, spec, image = sam_setup
    calls, handle = count_encoder_calls(spec)
    try:
        for kwargs in ({}, {"points": ""}, {"points": "{}"}, {"mask_prompt": torch.zeros(1, 48, 64)},
                       {"boxes": [[]]}, {"points": json.dumps({"points": [[3, 3, 0]]})}):
            mask, preview, report = nodes["VisionKitSAMSegment"]().run(spec, image, **kwargs)
            assert mask.shape == (1, 48, 64) and mask.sum() == 0, kwargs
            assert torch.equal(preview, image)
            assert json.loads(report) == [[]]
    finally:
        handle.remove()
    assert calls == []


def test_mask_prompt_becomes_its_bounding_box(sam_setup):
    nodes, spec, image = sam_setup
    m = torch.zeros(1, 24, 32)  # another size: resized to the image first
    m[0, 5:15, 10:22] = 1
    _, _, report = nodes["VisionKitSAMSegment"]().run(spec, image, mask_prompt=m)
    (obj,) = json.loads(report)[0]
    assert obj["box"] == [20.0, 10.0, 44.0, 30.0]


@pytest.mark.parametrize("points, msg", [
    ("{not json", "not valid JSON"),
    ('{"points": [[1, 2, 5]]}', "label 5"),
    ('{"points": [[1]]}', "not \\[x, y, label\\]"),
    ('{"boxes": [[10, 10, 5, 20]]}', "empty"),
    ('{"pointz": []}', "unknown key"),
    ("[1, 2]", "JSON object"),
])
def test_bad_points_json_is_rejected_up_front(pack, points, msg):
    msg_out = pack.NODE_CLASS_MAPPINGS["VisionKitSAMSegment"].VALIDATE_INPUTS(points=points)
    assert isinstance(msg_out, str)
    import re

    assert re.search(msg, msg_out), msg_out


def test_points_outside_the_image_are_explained(sam_setup):
    nodes, spec, image = sam_setup
    with pytest.raises(S.SamPromptError, match=r"outside the 64×48 image"):
        nodes["VisionKitSAMSegment"]().run(spec, image, points=json.dumps({"points": [[64, 10, 1]]}))
    with pytest.raises(S.SamPromptError, match="boxes are for 3 images"):
        nodes["VisionKitSAMSegment"]().run(spec, image, boxes=[[], [], []])
    assert all(not e["in_use"] for e in get_cache().entries())


def test_dilation_erosion_and_feather():
    m = torch.zeros(1, 21, 21)
    m[0, 8:13, 8:13] = 1
    assert S.grow_and_feather(m, 2)[0].sum() == 81
    assert S.grow_and_feather(m, -1)[0].sum() == 9
    soft = S.grow_and_feather(m, 0, 3)[0]
    assert 0 < soft[10, 6] < 1 and soft[10, 10] > 0.5 and soft[0, 0] < 0.01


def test_cached_model_unchanged_after_runs(sam_setup):
    nodes, spec, image = sam_setup
    with get_cache().use(spec) as sam:
        before = {k: v.clone() for k, v in sam.state_dict().items()}
    nodes["VisionKitSAMSegment"]().run(spec, image, points=json.dumps({"points": [[30, 20, 1]]}), dilation=3,
                                       feather=2)
    with get_cache().use(spec) as sam:
        after = sam.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_workflow_loadimage_sam_preview(pack, tmp_path):
    from PIL import Image

    from vk_testing.runner import WorkflowRunner

    arr = np.zeros((40, 50, 3), np.uint8)
    arr[10:30, 15:35] = (200, 30, 30)
    Image.fromarray(arr).save(tmp_path / "red.png")
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
          "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": "tiny_sam_vit.pth", "dtype": "fp32"}},
          "3": {"class_type": "VisionKitSAMSegment", "inputs": {
              "sam_model": ["2", 0], "image": ["1", 0], "multimask": "best score", "mask_threshold": 0.0,
              "dilation": 0, "feather": 0, "output": "union", "points": '{"boxes": [[15, 10, 35, 30]]}'}},
          "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}
    res = WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(wf)
    assert res.previews["4"][0].shape == (1, 40, 50, 3)
    assert res.outputs["3"][0].shape == (1, 40, 50)
