"""SAM prompts that are too big or of the wrong shape (issue 19): refused at validation with the limit named,
and many boxes decoded in bounded chunks (same masks as segment-anything's SamPredictor, box by box)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.perception import sam as S  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402


@pytest.mark.parametrize("points, msg", [
    ('{"points": 5}', "'points' must be a list"),
    ('{"boxes": {"a": 1}}', "'boxes' must be a list"),
    ('{"points": "1,2"}', "'points' must be a list"),
    ('{"points": [' * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (json.dumps({"points": [[1, 1, 1]] * (S.MAX_POINTS + 1)}), f"at most {S.MAX_POINTS} are allowed"),
    (json.dumps({"boxes": [[0, 0, 2, 2]] * (S.MAX_BOXES + 1)}), f"at most {S.MAX_BOXES} are allowed"),
    (json.dumps({"points": [[1, 1, 1]] * 100_000}), "100000 points"),
    (json.dumps({"x" * 5_000_000: 1}), "unknown key"),
], ids=["points int", "boxes dict", "points str", "deep nesting", "deep list", "points over the cap",
        "boxes over the cap", "100k points", "huge key"])
def test_bad_or_oversized_points_json_is_refused_with_a_message(pack, points, msg):
    out = pack.NODE_CLASS_MAPPINGS["VisionKitSAMSegment"].VALIDATE_INPUTS(points=points)
    assert isinstance(out, str) and msg in out, str(out)[:300]
    assert len(out) < 400, "the message must not echo the input"


def test_points_at_the_cap_are_accepted(pack):
    pts = json.dumps({"points": [[1, 1, 1]] * S.MAX_POINTS, "boxes": [[0, 0, 2, 2]] * S.MAX_BOXES})
    assert pack.NODE_CLASS_MAPPINGS["VisionKitSAMSegment"].VALIDATE_INPUTS(points=pts) is True


def test_too_many_objects_from_vk_boxes_are_refused(pack):
    boxes = [[0, 0, 4, 4]] * (S.MAX_OBJECTS + 1)
    with pytest.raises(S.SamPromptError, match=f"at most {S.MAX_OBJECTS}"):
        S.build_objects(boxes, [], 8, 8)


def test_many_boxes_are_decoded_in_bounded_chunks_with_predictor_parity(pack, monkeypatch):
    """40 boxes: the decoder never sees more than DECODE_CHUNK at once (before: all 40 in one batch, so memory
    grew with their number), and every mask and score equals SamPredictor's for that box alone."""
    from segment_anything import SamPredictor

    nodes = pack.NODE_CLASS_MAPPINGS
    (spec,) = nodes["VisionKitSAMLoader"]().load("tiny_sam_vit.pth", "fp32")
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 40, 56, 3, generator=g)
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(40):
        x0, y0 = int(rng.integers(0, 40)), int(rng.integers(0, 26))
        boxes.append([x0, y0, x0 + int(rng.integers(4, 16)), y0 + int(rng.integers(4, 14))])
    sizes = []
    real = SamPredictor.predict_torch

    def spy(self, point_coords, point_labels, boxes=None, *a, **k):
        sizes.append(len(boxes) if boxes is not None else len(point_coords))
        return real(self, point_coords, point_labels, boxes, *a, **k)

    monkeypatch.setattr(SamPredictor, "predict_torch", spy)
    mask, _, report = nodes["VisionKitSAMSegment"]().run(spec, image, output="per object",
                                                         points=json.dumps({"boxes": boxes}))
    monkeypatch.setattr(SamPredictor, "predict_torch", real)
    assert sum(sizes) == 40 and max(sizes) <= S.DECODE_CHUNK, sizes
    rep = json.loads(report)[0]
    with get_cache().use(spec) as sam:
        p = SamPredictor(sam)
        p.set_image(S._to_uint8_rgb(image[0]), image_format="RGB")
        for j, box in enumerate(boxes):
            ref_masks, ref_scores, _ = p.predict(box=np.array(box), multimask_output=True)
            best = int(np.argmax(ref_scores))
            assert rep[j]["scores"][0] == pytest.approx(float(ref_scores[best]), abs=1e-4)
            agree = (mask[j].numpy() > 0.5) == ref_masks[best]
            assert agree.mean() > 0.999, f"box {j}: {agree.mean():.4f} of pixels agree"
