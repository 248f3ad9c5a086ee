"""Real-ESRGAN nodes: the model loader (VisionKitUpscale joins it in the upscale issue)."""
from __future__ import annotations

from ..models import folders
from ..models.upscale import load_upscale_model
from .common import CATEGORY, file_fingerprint, model_combo, validate_model


class VisionKitUpscaleModelLoader:
    DESCRIPTION = ("Loads a Real-ESRGAN model (RRDBNet or SRVGGNetCompact: x4plus, x2plus, anime_6B, "
                   "general-x4v3, animevideov3 …). The architecture and scale are read from the weights.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("VK_UPSCALE_MODEL",)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("The Real-ESRGAN model, for VisionKit Upscale.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("upscale_models", "The Real-ESRGAN weights (.pth or .safetensors)."),
            "dtype": (["auto", "fp32", "fp16"], {"default": "auto",
                                                 "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return validate_model("upscale_models", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint("upscale_models", model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        path = folders.resolve("upscale_models", model_name)
        spec, _entry = load_upscale_model(path, dtype)
        return (spec,)
