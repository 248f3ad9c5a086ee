"""Grounded SAM equals Grounding DINO Detect followed by SAM Segment with those boxes."""
from __future__ import annotations

import json

import pytest
import torch

DINO = "tiny-grounding-dino"


@pytest.fixture()
def models(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    (dino,) = nodes["VisionKitGroundingDINOLoader"]().load(DINO, "fp32")
    (sam,) = nodes["VisionKitSAMLoader"]().load("tiny_sam_vit.pth", "fp32")
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 48, 64, 3, generator=g)
    return nodes, dino, sam, image


DETECT = dict(prompt="lion . dog", box_threshold=0.3, text_threshold=0.2, max_detections=0, position="all",
              best_only=False, resolution=64)
SEG = dict(multimask="best score", mask_threshold=0.0, dilation=2, feather=0, output="per object")


def test_same_result_as_chaining_the_two_nodes(models):
    nodes, dino, sam, image = models
    found, _, _, _ = nodes["VisionKitGroundingDINODetect"]().detect(dino, image, **DETECT)
    assert sum(len(b) for b in found) > 0, "the fixture should detect something at these thresholds"
    mask, _, report = nodes["VisionKitSAMSegment"]().run(sam, image, boxes=found, **SEG)
    g_mask, g_boxes, g_preview, g_report = nodes["VisionKitGroundedSAM"]().run(image, dino, sam, **DETECT, **SEG)
    assert g_boxes == found
    assert torch.equal(g_mask, mask)
    assert json.loads(g_report) == json.loads(report)
    assert g_preview.shape == (2, 48, 64, 3)


def test_left_most_selection_and_nothing_found(models):
    nodes, dino, sam, image = models
    args = {**DETECT, "position": "left-most"}
    mask, boxes, preview, report = nodes["VisionKitGroundedSAM"]().run(image, dino, sam, **args, **SEG)
    everything = nodes["VisionKitGroundingDINODetect"]().detect(dino, image, **DETECT)[0]
    for per_image, all_boxes in zip(boxes, everything):
        if all_boxes:
            centre = lambda e: (e["box"][0] + e["box"][2]) / 2  # noqa: E731
            assert len(per_image) == 1 and centre(per_image[0]) == min(centre(e) for e in all_boxes)
    none = nodes["VisionKitGroundedSAM"]().run(image, dino, sam, **{**DETECT, "box_threshold": 1.0}, **SEG)
    assert none[1] == [[], []] and none[0].sum() == 0 and none[0].shape == (2, 48, 64)
    assert not torch.equal(none[2], image)  # the preview says "no detection"


def test_inputs_mirror_the_two_nodes_with_tooltips(pack):
    cls = pack.NODE_CLASS_MAPPINGS["VisionKitGroundedSAM"]
    req = cls.INPUT_TYPES()["required"]
    assert {"image", "dino_model", "sam_model", "prompt", "position", "multimask", "dilation"} <= set(req)
    assert all(spec[1].get("tooltip") for spec in req.values())
    assert isinstance(cls.VALIDATE_INPUTS(prompt=" . . "), str)
