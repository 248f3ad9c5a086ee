"""Pose nodes: the ViTPose loader and pose from a photo (OpenPose skeleton image + keypoints JSON)."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception import hf_folder
from ..models.perception import pose as pose_mod
from ..models.perception.boxes import BOXES_TYPE
from ..models.perception.pose import POSE_MODEL_TYPE
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model
from .preview import with_preview

KEY = "pose"


class VisionKitPoseLoader:
    DESCRIPTION = ("Loads a ViTPose pose estimator from models/pose: a transformers folder (config.json, "
                   "model.safetensors, preprocessor_config.json), e.g. usyd-community/vitpose-base-simple. Nothing "
                   "is downloaded.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (POSE_MODEL_TYPE,)
    RETURN_NAMES = ("pose_model",)
    OUTPUT_TOOLTIPS = ("The ViTPose model, for VisionKit Pose From Photo.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo(KEY, "The ViTPose folder."),
            "dtype": (list(hf_folder.DTYPES), {
                "default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU. fp32 gives the reference keypoints."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        # Only model_name is named (ComfyUI gives a VALIDATE_INPUTS message to every input it names); dtype gets
        # ComfyUI's own list check. None: a linked input, checked when the node runs.
        return True if model_name is None else validate_model(KEY, model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint(KEY, model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        path = folders.resolve(KEY, model_name)
        spec, _entry = pose_mod.load_pose_model(path, dtype)
        return (spec,)


class VisionKitPoseEstimate:
    DESCRIPTION = ("Finds the body pose of the people in a photo with ViTPose and draws it as an OpenPose skeleton "
                   "(18 points with the neck, OpenPose colours, on black): the image ControlNet openpose expects. "
                   "Connect person boxes (e.g. Grounding DINO Detect with the prompt 'person') for several people; "
                   "without boxes the whole image is one person. No box is a normal result: a black pose image and "
                   "no people in the JSON.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "estimate"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("pose_image", "preview", "keypoints_json")
    OUTPUT_TOOLTIPS = (
        "The OpenPose skeletons on black, at the photo's size: the hint for ControlNet openpose.",
        "The skeletons over the dimmed photo, to check the result.",
        "Per image {people: [{pose_keypoints_2d: 18 × (x, y, confidence) in pixels (0, 0, 0 = not found), box, "
        "coco_keypoints_2d: ViTPose's 17 COCO points}], canvas_width, canvas_height}, as a JSON list (the layout of "
        "OpenPose JSON and comfyui_controlnet_aux's POSE_KEYPOINT).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_model": (POSE_MODEL_TYPE, {"tooltip": "From VisionKit Load Pose Model."}),
                "image": ("IMAGE", {"tooltip": "The photo(s); every image of the batch is done."}),
                "threshold": ("FLOAT", {
                    "default": pose_mod.DEFAULT_THRESHOLD, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "A point is drawn when its confidence is above this (higher = fewer, surer points; "
                               "the neck needs both shoulders)."}),
            },
            "optional": {
                "boxes": (BOXES_TYPE, {
                    "tooltip": "Person boxes (e.g. Grounding DINO Detect, prompt 'person'): one pose per box. Not "
                               "connected: the whole image is one person."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, threshold=None):
        if threshold is not None:
            try:
                pose_mod.check_threshold(threshold)
            except pose_mod.PoseError as ex:
                return str(ex)
        return True

    def estimate(self, pose_model, image, threshold: float = pose_mod.DEFAULT_THRESHOLD, boxes=None):
        threshold = pose_mod.check_threshold(threshold)
        results = pose_mod.estimate(pose_model, image, boxes)
        pose_image, preview, frames = pose_mod.render(results, image, threshold)
        return with_preview((pose_image, preview, to_json(frames)), preview, "VisionKitPose")
