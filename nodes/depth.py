"""Depth nodes: the depth-model loader and the depth map (ControlNet depth image + raw depth)."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception import depth as depth_mod
from ..models.perception import hf_folder
from ..models.perception.depth import DEPTH_MODEL_TYPE
from .common import CATEGORY, file_fingerprint, model_combo, validate_model
from .preview import with_preview

KEY = "depth"


class VisionKitDepthLoader:
    DESCRIPTION = ("Loads a depth estimator from models/depth: a transformers Depth Anything (V1/V2) or DPT folder "
                   "(config.json, model.safetensors, preprocessor_config.json), e.g. "
                   "depth-anything/Depth-Anything-V2-Small-hf. Nothing is downloaded.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DEPTH_MODEL_TYPE,)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("The depth model, for VisionKit Depth Map.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo(KEY, "The Depth Anything / DPT folder."),
            "dtype": (list(hf_folder.DTYPES), {
                "default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU. fp32 gives the reference depth."}),
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
        spec, _entry = depth_mod.load_depth_model(path, dtype)
        return (spec,)


class VisionKitDepthEstimate:
    DESCRIPTION = ("Estimates a depth map of the image (Depth Anything V2 / DPT): a gray image with near = bright, "
                   "scaled to 0..1 per image, the hint ControlNet depth expects; plus the model's raw depth as a "
                   "float map.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "estimate"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("depth_image", "raw_depth")
    OUTPUT_TOOLTIPS = (
        "The depth map as a gray IMAGE at the image's size (near = bright, 0..1 per image): the hint for ControlNet "
        "depth.",
        "The model's own prediction at the image's size, unscaled (relative inverse depth for Depth Anything / "
        "MiDaS: larger = nearer; metres for metric models). A float map in the MASK type: values may exceed 1.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "depth_model": (DEPTH_MODEL_TYPE, {"tooltip": "From VisionKit Load Depth Model."}),
                "image": ("IMAGE", {"tooltip": "The image(s); every image of the batch gets its own depth map."}),
            },
            "optional": {
                "resolution": ("INT", {
                    "default": 0, "min": 0, "max": depth_mod.MAX_RESOLUTION, "step": 14,
                    "tooltip": "The size the model sees (the image's aspect ratio is kept, sides a multiple of 14 "
                               "for Depth Anything). 0 = the model's own (518 for Depth Anything, 384 for DPT); "
                               "larger = finer detail, slower."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, resolution=None):
        if resolution is not None:
            try:
                depth_mod.check_resolution(resolution)
            except depth_mod.DepthError as ex:
                return str(ex)
        return True

    def estimate(self, depth_model, image, resolution: int = 0):
        raw = depth_mod.estimate(depth_model, image, resolution)
        img = depth_mod.depth_image(raw, depth_mod.is_metric(depth_model))
        return with_preview((img, raw), img, "VisionKitDepth")
