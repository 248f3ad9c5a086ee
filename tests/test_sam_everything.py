"""SAM Segment Everything: the node's masks equal segment-anything's own SamAutomaticMaskGenerator (same settings,
same tiny SAM weights built with segment-anything's classes here, not through the pack's loader), sorted by area;
the JSON records match the generator's; the overlay colours exactly the masked pixels; nothing found is one empty
mask; the settings are range-checked up front (points_per_side capped for memory and time).

The tiny SAM decodes at SAM's real 1024-px resolution, so a few points per side keep these tests to seconds."""
from __future__ import annotations

import json

import pytest
import torch
from vk_testing import import_pack
from vk_testing import tiny_models

import_pack()
from visionkit_pack.models.perception import sam_everything as E  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.core.imageops import to_uint8  # noqa: E402

LOOSE = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, points_per_batch=4)


def image(h=40, w=56, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, h, w, 3, generator=g) * 255).round() / 255


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture()
def sam(nodes):
    return nodes["VisionKitSAMLoader"]().load("tiny_sam_vit.pth", "fp32")[0]


@pytest.fixture(scope="module")
def reference_sam(models_dir):
    ref = tiny_models.tiny_sam()
    ref.load_state_dict(torch.load(models_dir / "sams" / "tiny_sam_vit.pth", weights_only=True))
    return ref.eval()


def generator_masks(reference_sam, img, **settings):
    from segment_anything import SamAutomaticMaskGenerator

    kw = E.Settings(**settings).generator_kwargs()
    records = SamAutomaticMaskGenerator(reference_sam, **kw).generate(to_uint8(img[0][..., :3]))
    return sorted(records, key=lambda r: -r["area"])


@pytest.mark.parametrize("settings", [LOOSE, dict(LOOSE, min_mask_region_area=30)],
                         ids=["loose", "small-regions-removed"])
def test_masks_equal_the_generators_own_sorted_by_area(nodes, sam, reference_sam, settings):
    img = image()
    masks, preview, js, count = nodes["VisionKitSAMSegmentEverything"]().run(sam, img, **settings)
    want = generator_masks(reference_sam, img, **settings)
    assert len(want) >= 2, "the tiny SAM found fewer than two masks: the ordering check needs more"
    assert count == len(want) and masks.shape == (len(want), 40, 56)
    for m, r in zip(masks, want):
        assert torch.equal(m.bool(), torch.from_numpy(r["segmentation"]))
    areas = [int(m.sum()) for m in masks]
    assert areas == sorted(areas, reverse=True)
    (records,) = json.loads(js)
    assert [x["area"] for x in records] == [r["area"] for r in want] == areas
    assert [x["mask"] for x in records] == list(range(len(want)))
    assert all(abs(x["predicted_iou"] - float(r["predicted_iou"])) < 1e-5 for x, r in zip(records, want))
    assert [x["bbox"] for x in records] == [[int(v) for v in r["bbox"]] for r in want]
    # the preview changes exactly the pixels some mask covers
    covered = masks.amax(dim=0) > 0.5
    changed = (preview[0] - img[0]).abs().amax(dim=-1) > 1e-6
    assert preview.shape == img.shape and torch.equal(changed & ~covered, torch.zeros_like(covered))
    assert int(changed.sum()) > 0


def test_max_masks_keeps_the_largest(nodes, sam):
    img = image(seed=1)
    all_masks = nodes["VisionKitSAMSegmentEverything"]().run(sam, img, **LOOSE)[0]
    two = nodes["VisionKitSAMSegmentEverything"]().run(sam, img, **LOOSE, max_masks=2)
    assert two[3] == 2 and torch.equal(two[0], all_masks[:2])


def test_nothing_found_is_one_empty_mask_per_image(nodes, sam):
    img = torch.cat([image(seed=2), image(seed=3)])
    strict = dict(LOOSE, pred_iou_thresh=1.0, stability_score_thresh=1.0)
    masks, preview, js, count = nodes["VisionKitSAMSegmentEverything"]().run(sam, img, **strict)
    assert count == 0 and masks.shape == (2, 40, 56) and float(masks.sum()) == 0
    assert json.loads(js) == [[], []] and torch.equal(preview, img)
    assert not [e for e in get_cache().entries() if e["in_use"]]


def test_settings_are_checked_up_front(nodes):
    cls = nodes["VisionKitSAMSegmentEverything"]
    # /prompt: ComfyUI's own min/max, the same bounds as Settings.check (no VALIDATE_INPUTS to repeat a message
    # on every input); Settings.check again when the node runs, before SAM is touched
    assert not hasattr(cls, "VALIDATE_INPUTS")
    types_ = cls.INPUT_TYPES()
    spec = {**types_["required"], **types_["optional"]}
    bounds = {"points_per_side": (1, E.MAX_POINTS_PER_SIDE), "points_per_batch": (1, E.MAX_POINTS_PER_BATCH),
              "crop_n_layers": (0, E.MAX_CROP_LAYERS), "min_mask_region_area": (0, 1 << 24),
              "pred_iou_thresh": (0.0, 1.0), "stability_score_thresh": (0.0, 1.0), "box_nms_thresh": (0.0, 1.0)}
    for k, (lo, hi) in bounds.items():
        assert (spec[k][1]["min"], spec[k][1]["max"]) == (lo, hi), k

    def refused(**kw):
        with pytest.raises(E.SegmentEverythingError) as ei:
            E.segment_everything(None, image(), E.Settings(**{**LOOSE, **kw}))
        return str(ei.value)

    msg = refused(points_per_side=E.MAX_POINTS_PER_SIDE + 1)
    assert "points_per_side must be a whole number from 1 to 64" in msg and "16 is 4× faster" in msg
    assert "pred_iou_thresh must be a number from 0 to 1" in refused(pred_iou_thresh=float("nan"))
    assert "crop_n_layers" in refused(crop_n_layers=5)
    assert "lower it when memory runs out" in refused(points_per_batch=0)
    with pytest.raises(E.SegmentEverythingError, match="max_masks"):
        E.segment_everything(None, image(), E.Settings(**LOOSE), -1)
