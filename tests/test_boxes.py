"""VK_BOXES helpers: format, clamping, position selection, masks, preview drawing, JSON."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def bx():
    from vk_testing import import_pack

    import_pack()
    from visionkit_pack.models.perception import boxes

    return boxes


def E(x0, y0, x1, y1, score=0.5, label="x"):
    return {"box": [x0, y0, x1, y1], "score": score, "label": label}


# ------------------------------------------------------------------ format
def test_make_box_and_normalize_give_plain_json_types(bx):
    e = bx.make_box(torch.tensor([1, 2, 3, 4]), torch.tensor(0.25), "lion")
    assert e == {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.25, "label": "lion"}
    assert all(type(v) is float for v in e["box"]) and type(e["score"]) is float
    value = bx.normalize([[E(0, 0, 5, 5, 0.9, "a")], []])
    assert json.loads(json.dumps(value)) == value
    assert bx.normalize(json.dumps(value)) == value  # the JSON string is accepted too
    assert bx.normalize([E(0, 0, 1, 1)]) == [[bx.make_box([0, 0, 1, 1], 0.5, "x")]]  # one image's list
    assert bx.normalize([[[0, 0, 2, 2]]]) == [[{"box": [0.0, 0.0, 2.0, 2.0], "score": 1.0, "label": ""}]]
    assert bx.normalize(None) == [] and bx.normalize("") == []


@pytest.mark.parametrize("bad, words", [
    (5, "list"), ([[{"score": 1}]], "not a box"), ([[{"box": [1, 2, 3]}]], "[x0, y0, x1, y1]"),
    ([[{"box": [0, 0, float("nan"), 1]}]], "finite"), ("{not json", "not valid JSON"),
    ([[{"box": ["a", 0, 1, 1]}]], "numbers"),
])
def test_normalize_rejects_bad_values_clearly(bx, bad, words):
    with pytest.raises(bx.BoxesError, match=None) as ei:
        bx.normalize(bad)
    assert words in str(ei.value)


def test_clamp_box_keeps_boxes_inside_the_image(bx):
    assert bx.clamp_box([-5, -1, 120, 30], 100, 20) == [0.0, 0.0, 100.0, 20.0]
    assert bx.clamp_box([10, 5, 2, 1], 100, 20) == [2.0, 1.0, 10.0, 5.0]  # swapped corners are ordered
    assert bx.clamp_all([[E(-1, -1, 5, 5)], [E(0, 0, 50, 50)]], [(4, 4), (10, 20)]) == [
        [bx.make_box([0, 0, 4, 4], 0.5, "x")], [bx.make_box([0, 0, 20, 10], 0.5, "x")]]


# ------------------------------------------------------------------ selection
# A starts further left (x0 = 0) but its centre (50) is right of B's centre (20): left-most is B.
# C ends furthest right (x1 = 100) but its centre (60) is left of D's (75): right-most is D.
A = E(0, 0, 100, 10, 0.9, "a")  # centre x 50, area 1000
B = E(10, 40, 30, 60, 0.6, "b")  # centre x 20, centre y 50, area 400
C = E(20, 0, 100, 4, 0.7, "c")  # centre x 60, area 320
D = E(70, 80, 80, 82, 0.8, "d")  # centre x 75, centre y 81, area 20


@pytest.mark.parametrize("position, want", [
    ("left-most", "b"), ("right-most", "d"), ("largest", "a"), ("smallest", "d"),
    ("top-most", "c"), ("bottom-most", "d"),
])
def test_position_picks_by_centre_or_area(bx, position, want):
    got = bx.select([A, B, C, D], position)
    assert [e["label"] for e in got] == [want]


def test_all_keeps_every_box_sorted_by_score(bx):
    assert [e["label"] for e in bx.select([B, A, D, C], "all")] == ["a", "d", "c", "b"]


def test_ties_go_to_the_higher_score(bx):
    low, high = E(0, 0, 10, 10, 0.3, "low"), E(0, 0, 10, 10, 0.8, "high")
    for pos in ("left-most", "right-most", "largest", "smallest", "top-most", "bottom-most"):
        assert bx.select([low, high], pos)[0]["label"] == "high"


def test_best_only_and_max_detections_and_their_order(bx):
    boxes = [A, B, C, D]
    assert [e["label"] for e in bx.select(boxes, best_only=True)] == ["a"]
    assert [e["label"] for e in bx.select(boxes, max_detections=2)] == ["a", "d"]
    assert [e["label"] for e in bx.select(boxes, max_detections=10)] == ["a", "d", "c", "b"]
    # position first: the left-most box is kept even though it has the lowest score
    assert [e["label"] for e in bx.select(boxes, "left-most", best_only=True, max_detections=1)] == ["b"]
    assert bx.select([], "left-most", best_only=True) == []


def test_select_does_not_change_its_input_and_checks_options(bx):
    boxes = [dict(A), dict(B)]
    before = json.dumps(boxes)
    out = bx.select(boxes, "left-most")
    out[0]["label"] = "changed"
    assert json.dumps(boxes) == before
    with pytest.raises(bx.BoxesError, match="left-most"):
        bx.select(boxes, "leftmost")
    with pytest.raises(bx.BoxesError, match=">= 0"):
        bx.select(boxes, max_detections=-1)
    assert bx.select_all([[A, B], []], "largest") == [[bx.make_box(A["box"], 0.9, "a")], []]


# ------------------------------------------------------------------ masks
def test_mask_covers_exactly_the_box_pixels(bx):
    m = bx.boxes_to_mask([[E(2, 1, 5, 3)]], 6, 8)
    assert m.shape == (1, 6, 8) and m.dtype == torch.float32
    want = torch.zeros(6, 8)
    want[1:3, 2:5] = 1  # x1 / y1 exclusive
    assert torch.equal(m[0], want)
    # a fractional box covers every pixel it touches; a box past the border is clamped
    m = bx.boxes_to_mask([[E(1.5, 0.2, 2.1, 0.9)], [E(6, 4, 50, 50)]], 6, 8)
    assert m[0].nonzero().tolist() == [[0, 1], [0, 2]]
    assert m[1].sum() == 2 * 2 and m[1, 4:, 6:].all()


def test_mask_batches(bx):
    assert torch.equal(bx.boxes_to_mask([[], []], 3, 4), torch.zeros(2, 3, 4))
    one = bx.boxes_to_mask([[E(0, 0, 1, 1)]], 3, 4, batch=3)  # one image's boxes apply to every image
    assert one.shape == (3, 3, 4) and one[:, 0, 0].tolist() == [1, 1, 1]
    assert torch.equal(bx.boxes_to_mask([], 3, 4, batch=2), torch.zeros(2, 3, 4))
    with pytest.raises(bx.BoxesError, match="2 images but the batch has 3"):
        bx.boxes_to_mask([[], []], 3, 4, batch=3)


# ------------------------------------------------------------------ preview
def test_preview_draws_boxes_and_labels(bx):
    img = torch.full((2, 60, 80, 3), 128 / 255)
    out = bx.draw_preview(img, [[E(20, 25, 60, 55, 0.87, "lion")], [E(5, 5, 30, 30, 0.5, "lion")]])
    assert out.shape == (2, 60, 80, 3) and out.dtype == torch.float32
    assert not torch.equal(out[0, 54, 20:60], img[0, 54, 20:60])  # bottom edge drawn
    assert torch.equal(out[0, 40, 40], img[0, 40, 40])  # inside untouched
    assert not torch.equal(out[0, 15:25, 20:60], img[0, 15:25, 20:60])  # label above the box
    assert torch.equal(out[0, 54, 20], out[1, 29, 5])  # same label, same colour across the batch
    assert torch.equal(out[0, 58:, 70:], img[0, 58:, 70:])  # no "no detection" note on images with boxes


def test_preview_says_when_nothing_was_found(bx):
    img = torch.rand(2, 40, 120, 4)  # RGBA is accepted, the preview is RGB
    out = bx.draw_preview(img, [[], [E(60, 20, 80, 30)]])
    assert out.shape == (2, 40, 120, 3)
    note = out[0, :12, :60]
    assert (note < 0.01).float().mean() > 0.5 and (note > 0.8).any()  # black banner, white text
    assert torch.allclose(out[0, 20:, 60:], (img[0, 20:, 60:, :3] * 255).round() / 255)
    assert torch.allclose(out[1, :12, :50], (img[1, :12, :50, :3] * 255).round() / 255)  # not on image 2
