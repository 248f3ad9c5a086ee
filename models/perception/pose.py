"""Pose from a photo: transformers' ViTPose on person boxes → OpenPose skeletons for ControlNet openpose.

The model is a transformers folder in the `pose` model folder (config.json with model_type "vitpose" +
weights + preprocessor_config.json), e.g. usyd-community/vitpose-base-simple. ViTPose is a top-down
estimator: it needs a box per person. The boxes come from VK_BOXES (Grounding DINO "person" in the shipped
workflow, or any detector) or, without boxes, the whole image is one person.

Keypoints are exactly what transformers computes: its image processor crops each box (affine warp to the
model's input size), the model gives heatmaps, and its `post_process_pose_estimation` turns them into 17
COCO points in image pixels with a score each. VisionKit only converts them to the OpenPose-18 layout
(pose_draw.py) and draws them.

Public API:

    estimate(spec, image, boxes=None, progress=None) -> list[list[dict]]
        per image, per person: {"box": [x0, y0, x1, y1], "box_score": s, "keypoints": [[x, y] * 17],
        "scores": [s * 17]} (COCO order, pixels of that image); [] for an image whose box list is empty
    render(people_per_image, image, threshold) -> (pose IMAGE, preview IMAGE, keypoints JSON list)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.errors import VisionKitError
from . import boxes as boxes_mod
from . import hf_folder, pose_draw

POSE_MODEL_TYPE = "VK_POSE_MODEL"  # the ComfyUI socket type of a loaded ViTPose model

DEFAULT_THRESHOLD = 0.3
COCO_POINTS = 17
FOLDER_HINT = ("a transformers ViTPose folder (config.json with model_type 'vitpose', model.safetensors, "
               "preprocessor_config.json), e.g. usyd-community/vitpose-base-simple")


class PoseError(VisionKitError):
    """A pose model or input VisionKit cannot use; the message says what to do."""


@dataclass
class PoseBundle:
    """What the cache holds for one ViTPose model: the network and its image processor."""

    model: object
    processor: object
    info: dict = field(default_factory=dict)

    def vk_modules(self):
        return [self.model]


_OTHER_MODELS = {
    "depth_anything": "a Depth Anything depth model: put it in models/depth and use 'VisionKit Load Depth Model'",
    "dpt": "a DPT depth model: put it in models/depth and use 'VisionKit Load Depth Model'",
    "vitpose_backbone": "only ViTPose's backbone, without the keypoint head",
    "grounding-dino": "a Grounding DINO detector: put it in models/grounding-dino",
    "clip": "a CLIP model: put it in models/clip_models",
}


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401  (transformers needs it; imported here so the pack import stays cheap)

    path = spec.path
    name = os.path.basename(path.rstrip(os.sep))
    cfg = hf_folder.read_config(path, PoseError, f"the pose folder needs {FOLDER_HINT}")
    mt = cfg.get("model_type")
    if mt != "vitpose":
        what = _OTHER_MODELS.get(mt, f"a {mt!r} model" if mt else "not a transformers model (no model_type)")
        raise PoseError(f"{name} is {what}, not a ViTPose pose model. Put {FOLDER_HINT} into models/pose.")
    hf_folder.check_weights(path, PoseError)
    from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor

    model = hf_folder.from_pretrained(VitPoseForPoseEstimation, path, PoseError, check_fit=True)
    n = int(getattr(model.config, "num_labels", 0) or 0)
    if n < COCO_POINTS:
        raise PoseError(f"{name} predicts {n} keypoints; the OpenPose body needs the 17 COCO points (COCO or "
                        "COCO-WholeBody models)")
    proc = hf_folder.processor(VitPoseImageProcessor, path, PoseError)
    dtype = hf_folder.finish(model, spec, device)
    experts = int(getattr(model.config.backbone_config, "num_experts", 1) or 1)
    info = {"format": "transformers folder", "keypoints": n, "experts": experts, "dtype": dtype}
    return Loaded(PoseBundle(model, proc, info), meta=info)


def pose_spec(path: str, dtype: str = "auto") -> ModelSpec:
    hf_folder.check_dtype(dtype, PoseError)
    return ModelSpec(kind="pose_vitpose", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_pose_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    spec = pose_spec(path, dtype)
    return spec, get_cache().load(spec)


# ---------------------------------------------------------------- inference
def check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise PoseError(f"threshold must be a number from 0 to 1, got {threshold!r}")
    return float(threshold)


def person_boxes(boxes, batch: int, sizes: list[tuple[int, int]]) -> list[list[dict]]:
    """Per image, the person boxes to run (clamped; boxes under 1 px dropped). None → the whole image."""
    if boxes is None:
        return [[boxes_mod.make_box([0, 0, w, h], 1.0, "person")] for h, w in sizes]
    try:
        per_image = boxes_mod.normalize(boxes, "boxes")
    except boxes_mod.BoxesError as ex:
        raise PoseError(str(ex)) from ex
    if len(per_image) == 1 and batch > 1:
        per_image = per_image * batch
    if len(per_image) != batch:
        raise PoseError(f"boxes has {len(per_image)} image(s) of boxes but the image batch has {batch}; give one "
                        "list of boxes for all images or one per image (the detector's boxes for the same batch)")
    out = []
    for (h, w), found in zip(sizes, per_image):
        kept = []
        for e in found:
            x0, y0, x1, y1 = boxes_mod.clamp_box(e["box"], w, h)
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                kept.append(boxes_mod.make_box([x0, y0, x1, y1], e["score"], e["label"]))
        out.append(kept)
    return out


def coco_boxes(found: list[dict]) -> list[list[float]]:
    """VK_BOXES entries (x0, y0, x1, y1) → the COCO (x, y, width, height) boxes ViTPose's processor takes."""
    return [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in (e["box"] for e in found)]


def run_image(bundle: PoseBundle, rgb_uint8, coco: list[list[float]]) -> list[dict]:
    """transformers' own steps for one image (HWC uint8 numpy) and its COCO boxes: processor → model → post-process."""
    import torch

    model = bundle.model
    param = next(model.parameters())
    # channels_last said explicitly: a tiny (1, 1, 3) image would otherwise be read as channels first
    inputs = bundle.processor(images=rgb_uint8, boxes=[coco], return_tensors="pt", input_data_format="channels_last")
    kwargs = {"pixel_values": inputs["pixel_values"].to(device=param.device, dtype=param.dtype)}
    if bundle.info.get("experts", 1) > 1:  # ViTPose+ (mixture of experts): expert 0 is the COCO one
        kwargs["dataset_index"] = torch.zeros(len(coco), dtype=torch.long, device=param.device)
    with torch.inference_mode():
        out = model(**kwargs)
    if out.heatmaps.dtype != torch.float32:
        out.heatmaps = out.heatmaps.float()
    return bundle.processor.post_process_pose_estimation(out, boxes=[coco])[0]


def estimate(spec: ModelSpec, image, boxes=None, progress=None) -> list[list[dict]]:
    """ViTPose keypoints of every person (box) of every image; see the module docstring."""
    from ..core import host
    from ..core.imageops import check_image, to_uint8

    image = check_image(image)
    b, h, w = image.shape[:3]
    per_image = person_boxes(boxes, b, [(h, w)] * b)
    results: list[list[dict]] = []
    with get_cache().use(spec) as bundle:
        bar = host.Progress(b, progress)
        for i in range(b):
            host.throw_if_cancelled()
            found = per_image[i]
            people = []
            if found:  # no box (nothing detected): no person, not an error
                raw = run_image(bundle, to_uint8(image[i, ..., :3]), coco_boxes(found))
                for e, r in zip(found, raw):
                    people.append({"box": e["box"], "box_score": e["score"],
                                   "keypoints": r["keypoints"][:COCO_POINTS].tolist(),
                                   "scores": r["scores"].reshape(-1)[:COCO_POINTS].tolist()})
            results.append(people)
            bar.update(1)
    return results


# ---------------------------------------------------------------- drawing and JSON
def openpose_people(people: list[dict], threshold: float, height: int, width: int) -> list[list]:
    """Each person's 18 OpenPose entries, normalised to 0..1 of the image (None below the threshold)."""
    out = []
    for p in people:
        pts = pose_draw.coco_to_openpose(p["keypoints"], p["scores"], threshold)
        out.append([None if q is None else (q[0] / width, q[1] / height, q[2]) for q in pts])
    return out


def keypoints_json(people: list[dict], threshold: float, height: int, width: int) -> dict:
    """One image in the OpenPose JSON layout (as comfyui_controlnet_aux's POSE_KEYPOINT): pixels, 0 0 0 = missing.

    Besides `pose_keypoints_2d` (18 OpenPose points × (x, y, confidence)), each person carries its box and the
    model's 17 COCO points (`coco_keypoints_2d`, every point, with its score, before the threshold).
    """
    persons = []
    for p, pts in zip(people, openpose_people(people, threshold, height, width)):
        flat = []
        for q in pts:
            flat += [0.0, 0.0, 0.0] if q is None else [q[0] * width, q[1] * height, q[2]]
        coco = []
        for (x, y), s in zip(p["keypoints"], p["scores"]):
            coco += [float(x), float(y), float(s)]
        persons.append({"pose_keypoints_2d": flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None, "box": [float(v) for v in p["box"]],
                        "box_score": float(p["box_score"]), "coco_keypoints_2d": coco})
    return {"people": persons, "canvas_height": int(height), "canvas_width": int(width)}


def render(results: list[list[dict]], image, threshold: float):
    """(pose IMAGE on black, preview IMAGE = skeleton over the dimmed photo, list of per-image keypoint dicts)."""
    import numpy as np

    from ..core.imageops import check_image, from_uint8, to_uint8

    threshold = check_threshold(threshold)
    image = check_image(image)
    b, h, w = image.shape[:3]
    poses, previews, frames = [], [], []
    for i in range(b):
        canvas = pose_draw.draw_people(h, w, openpose_people(results[i], threshold, h, w))
        photo = to_uint8(image[i, ..., :3])
        drawn = canvas.any(axis=-1, keepdims=True)
        previews.append(np.where(drawn, canvas, (photo.astype(np.uint16) * 2 // 5).astype(np.uint8)))
        poses.append(canvas)
        frames.append(keypoints_json(results[i], threshold, h, w))
    return from_uint8(np.stack(poses)), from_uint8(np.stack(previews)), frames
