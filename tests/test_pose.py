"""Pose from a photo: the ViTPose loader and VisionKit Pose From Photo, compared with transformers' own processor,
model and `post_process_pose_estimation` on the same tiny ViTPose, and the skeleton drawing compared with
controlnet_aux's OpenPose drawing (`draw_bodypose`) on the same keypoints (a pixel test of joint centres and limb
middles stands in where controlnet_aux is not installed)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

FOLDER = "tiny-vitpose"


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture()
def pm(pack):
    from visionkit_pack.models.perception import pose

    return pose


@pytest.fixture()
def draw(pack):
    from visionkit_pack.models.perception import pose_draw

    return pose_draw


def photo(h=72, w=56, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, 3, generator=g)


def load(nodes):
    return nodes["VisionKitPoseLoader"]().load(FOLDER, "fp32")[0]


def reference(models_dir, image, coco_boxes):
    """transformers' own steps: VitPoseImageProcessor → VitPoseForPoseEstimation → post_process_pose_estimation."""
    from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor

    folder = str(models_dir / "pose" / FOLDER)
    proc = VitPoseImageProcessor.from_pretrained(folder)
    model = VitPoseForPoseEstimation.from_pretrained(folder).eval()
    rgb = (image[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    inputs = proc(images=rgb, boxes=[coco_boxes], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    return proc.post_process_pose_estimation(out, boxes=[coco_boxes])[0]


# ---------------------------------------------------------------- keypoints = transformers
def test_keypoints_equal_transformers_post_processing_for_each_box(pm, nodes, models_dir):
    img = photo()
    boxes = [[{"box": [4, 6, 40, 70], "score": 0.9, "label": "person"},
              {"box": [20.5, 0, 56, 50.25], "score": 0.8, "label": "person"}]]
    spec = load(nodes)
    got = pm.estimate(spec, img, boxes)
    ref = reference(models_dir, img, [[4, 6, 36, 64], [20.5, 0, 35.5, 50.25]])
    assert len(got) == 1 and len(got[0]) == 2
    for person, r in zip(got[0], ref):
        assert torch.equal(torch.tensor(person["keypoints"]), r["keypoints"].float())
        assert torch.equal(torch.tensor(person["scores"]), r["scores"].reshape(-1).float())
    # two different crops give two different poses (the check above is not comparing constants)
    assert got[0][0]["keypoints"] != got[0][1]["keypoints"]


def test_without_boxes_the_whole_image_is_one_person(pm, nodes, models_dir):
    img = photo(h=64, w=80, seed=3)
    got = pm.estimate(load(nodes), img)
    ref = reference(models_dir, img, [[0, 0, 80, 64]])
    assert len(got[0]) == 1 and got[0][0]["box"] == [0.0, 0.0, 80.0, 64.0]
    assert torch.equal(torch.tensor(got[0][0]["keypoints"]), ref[0]["keypoints"].float())


def test_no_person_box_is_an_empty_result_not_an_error(nodes):
    img = photo(b=2)
    pose_img, preview, text = nodes["VisionKitPoseEstimate"]().estimate(load(nodes), img, 0.3, boxes=[[], []])
    assert pose_img.shape == img.shape and float(pose_img.abs().max()) == 0.0
    assert preview.shape == img.shape
    frames = json.loads(text)
    assert [f["people"] for f in frames] == [[], []]
    assert frames[0]["canvas_width"] == 56 and frames[0]["canvas_height"] == 72


def test_batch_of_boxes_must_match_the_images(nodes, pm):
    with pytest.raises(pm.PoseError, match="boxes has 2 image"):
        nodes["VisionKitPoseEstimate"]().estimate(load(nodes), photo(b=3), 0.3,
                                                  boxes=[[[0, 0, 10, 10]], [[0, 0, 10, 10]]])
    # one list of boxes applies to every image
    _p, _v, text = nodes["VisionKitPoseEstimate"]().estimate(load(nodes), photo(b=2), 0.0, boxes=[[[0, 0, 30, 40]]])
    assert [len(f["people"]) for f in json.loads(text)] == [1, 1]


# ---------------------------------------------------------------- OpenPose layout, threshold, JSON
def test_coco_to_openpose_layout_and_neck(draw):
    pts = [[float(i), float(10 * i)] for i in range(17)]
    scores = [0.9] * 17
    op = draw.coco_to_openpose(pts, scores, 0.3)
    assert len(op) == 18
    assert op[0][:2] == (0.0, 0.0)  # nose
    assert op[1][:2] == ((5 + 6) / 2, (50 + 60) / 2)  # neck = mid-shoulders
    assert op[2][:2] == (6.0, 60.0) and op[5][:2] == (5.0, 50.0)  # right / left shoulder
    assert op[4][:2] == (10.0, 100.0) and op[7][:2] == (9.0, 90.0)  # right / left wrist
    assert op[8][:2] == (12.0, 120.0) and op[13][:2] == (15.0, 150.0)  # right hip, left ankle
    assert [op[i][:2] for i in (14, 15, 16, 17)] == [(2.0, 20.0), (1.0, 10.0), (4.0, 40.0), (3.0, 30.0)]  # eyes, ears
    low = list(scores)
    low[6] = 0.1  # right shoulder below the threshold: it and the neck are gone, nothing else
    op = draw.coco_to_openpose(pts, low, 0.3)
    assert op[2] is None and op[1] is None and sum(p is None for p in op) == 2


def test_threshold_drops_points_from_json_and_drawing(nodes):
    img = photo(seed=5)
    node = nodes["VisionKitPoseEstimate"]()
    spec = load(nodes)
    _p, _v, text = node.estimate(spec, img, 0.0)
    person = json.loads(text)[0]["people"][0]
    coco_scores = person["coco_keypoints_2d"][2::3]
    mid = float(np.median(coco_scores))
    pose_all, _v, _t = node.estimate(spec, img, 0.0)
    pose_some, _v, text_some = node.estimate(spec, img, mid)
    flat = json.loads(text_some)[0]["people"][0]["pose_keypoints_2d"]
    kept = [flat[i * 3 + 2] for i in range(18)]
    assert all(c == 0 or c > mid for c in kept) and any(c == 0 for c in kept) and any(c > 0 for c in kept)
    assert float(pose_some.sum()) < float(pose_all.sum())  # fewer points drawn


def test_json_points_are_the_keypoints_in_pixels(nodes, draw):
    img = photo(seed=6)
    _p, _v, text = nodes["VisionKitPoseEstimate"]().estimate(load(nodes), img, 0.0)
    frame = json.loads(text)[0]
    p = frame["people"][0]
    coco = np.array(p["coco_keypoints_2d"]).reshape(17, 3)
    op = np.array(p["pose_keypoints_2d"]).reshape(18, 3)
    assert (coco[:, 2] > 0).sum() >= 5  # enough points above the threshold for the check to mean something
    for i, c in enumerate(draw.OPENPOSE_FROM_COCO):
        if c is not None:  # a point over the threshold is the COCO point; one under it is 0 0 0
            assert np.allclose(op[i], coco[c] if coco[c, 2] > 0 else 0, atol=1e-4), i
    if coco[5, 2] > 0 and coco[6, 2] > 0:
        assert np.allclose(op[1, :2], (coco[5, :2] + coco[6, :2]) / 2, atol=1e-4)
    else:
        assert list(op[1]) == [0, 0, 0]


# ---------------------------------------------------------------- the drawing
def some_people(draw, h, w, seed=0):
    rng = np.random.default_rng(seed)
    people = []
    for k in range(3):
        pts = rng.uniform([0.1, 0.1], [0.9, 0.9], size=(17, 2)) * [w, h]
        scores = rng.uniform(0, 1, size=17)
        op = draw.coco_to_openpose(pts.tolist(), scores.tolist(), 0.25)
        people.append([None if q is None else (q[0] / w, q[1] / h, q[2]) for q in op])
    return people


def test_drawing_equals_controlnet_aux(draw):
    # The reference drawing; controlnet-aux is in tests/requirements.txt (a missing one is a broken test venv).
    from controlnet_aux.open_pose import util
    from controlnet_aux.open_pose.body import Keypoint

    for h, w, seed in ((256, 192, 0), (300, 420, 1), (97, 131, 2)):
        people = some_people(draw, h, w, seed)
        ours = draw.draw_people(h, w, people)
        ref = np.zeros((h, w, 3), dtype=np.uint8)
        for pts in people:  # controlnet_aux's draw_poses: person by person, body only
            ref = util.draw_bodypose(ref, [None if q is None else Keypoint(q[0], q[1], q[2]) for q in pts])
        assert ours.any()
        assert np.array_equal(ours, ref), int((ours != ref).any(-1).sum())


def test_drawing_colours_at_joints_and_limb_middles(draw):
    """Without controlnet_aux: each joint centre has its OpenPose colour, each limb's middle 60 % of its colour."""
    h, w = 200, 200
    pts = [(0.5, 0.1), (0.5, 0.25), (0.3, 0.25), (0.2, 0.45), (0.15, 0.65), (0.7, 0.25), (0.8, 0.45), (0.85, 0.65),
           (0.4, 0.6), (0.38, 0.78), (0.36, 0.95), (0.6, 0.6), (0.62, 0.78), (0.64, 0.95), (0.45, 0.07),
           (0.55, 0.07), (0.4, 0.09), (0.6, 0.09)]
    canvas = draw.draw_people(h, w, [[(x, y, 1.0) for x, y in pts]])
    for i, (x, y) in enumerate(pts):
        assert tuple(canvas[int(y * h), int(x * w)]) == draw.COLORS[i], i
    # limb middles far from every joint (joint circles are drawn last and cover limb ends)
    joints = np.array(pts) * [w, h]
    checked = 0
    for k, (mx, my) in draw.limb_midpoints([(x, y, 1.0) for x, y in pts], h, w):
        if np.min(np.hypot(*(joints - [mx, my]).T)) < draw.POINT_RADIUS + 3:
            continue
        px = tuple(int(v) for v in canvas[int(my), int(mx)])
        want = tuple(int(c * draw.LIMB_SHADE) for c in draw.COLORS[k])
        # a later limb may cross an earlier one's middle: then it has that limb's colour
        assert px == want or px in {tuple(int(c * draw.LIMB_SHADE) for c in col) for col in draw.COLORS[k + 1:]}, k
        checked += px == want
    assert checked >= 10
    assert tuple(canvas[0, 0]) == (0, 0, 0)  # black background


def test_node_pose_image_is_the_drawing_of_its_json(nodes, draw):
    img = photo(h=96, w=64, seed=7)
    pose_img, preview, text = nodes["VisionKitPoseEstimate"]().estimate(load(nodes), img, 0.1, boxes=[[
        {"box": [0, 0, 40, 96], "score": 1.0, "label": "person"}, {"box": [24, 10, 64, 90], "score": 0.5,
                                                                   "label": "person"}]])
    frame = json.loads(text)[0]
    people = []
    for p in frame["people"]:
        a = np.array(p["pose_keypoints_2d"]).reshape(18, 3)
        people.append([None if c == 0 else (x / 64, y / 96, c) for x, y, c in a])
    want = draw.draw_people(96, 64, people)
    assert torch.equal((pose_img[0] * 255).round().to(torch.uint8), torch.from_numpy(want))
    drawn = torch.from_numpy(want.any(-1))
    assert torch.equal(preview[0][drawn], pose_img[0][drawn])  # the preview shows the skeleton over the photo
    assert float(preview[0][~drawn].max()) <= 0.41


# ---------------------------------------------------------------- loading and bad input
def test_loader_is_cached_and_says_what_a_wrong_folder_is(nodes, pm, models_dir, tmp_path, monkeypatch):
    from visionkit_pack.models.core.cache import get_cache

    a, b = load(nodes), load(nodes)
    assert a == b and get_cache().stats()["totals"]["misses"] == 1
    other = tmp_path / "pose"
    shutil.copytree(models_dir / "depth" / "tiny-depth-anything", other / "depth-in-pose")
    (other / "no-weights").mkdir()
    shutil.copyfile(models_dir / "pose" / FOLDER / "config.json", other / "no-weights" / "config.json")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(pm.PoseError, match="Depth Anything.*models/depth"):
        nodes["VisionKitPoseLoader"]().load("depth-in-pose")
    with pytest.raises(pm.PoseError, match="no weights"):
        nodes["VisionKitPoseLoader"]().load("no-weights")
    msg = nodes["VisionKitPoseLoader"].VALIDATE_INPUTS(model_name="vitpose-base-simple")
    assert isinstance(msg, str) and "vitpose-base-simple" in msg and "pose" in msg


def test_validate_inputs(nodes):
    v = nodes["VisionKitPoseEstimate"].VALIDATE_INPUTS
    assert v(threshold=0.3) is True and v() is True
    assert "threshold" in v(threshold=1.5)
    # dtype: ComfyUI's own list check (VALIDATE_INPUTS names only model_name)
    assert "fp8" not in nodes["VisionKitPoseLoader"].INPUT_TYPES()["required"]["dtype"][0]
    assert nodes["VisionKitPoseLoader"].VALIDATE_INPUTS() is True  # a linked model_name arrives as None
