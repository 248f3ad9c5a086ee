"""Prompt Encode (CLIP): a pipeline's text encoders turn the positive and negative prompt into VK_CONDITIONING."""
from __future__ import annotations

from ..models.sd.prompt import MIN_CLIP_LAYER, SizeCond, encode_pair
from ..models.sd.prompt_tokens import check_nesting
from ..models.sd.types import (
    CONDITIONING_TYPE,
    PIPELINE_TYPE,
    GenerationError,
    PipelineHandle,
)
from .common import CATEGORY

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION

TEXT_TIP = ("Prompt weighting as in ComfyUI: (text) = ×1.1, (text:1.3) = weight 1.3, [text] = ÷1.1, nesting "
            "multiplies ((text)) = 1.21, an explicit weight replaces the inherited one; \\( \\) \\[ \\] are literal "
            "brackets. Longer than 75 tokens: encoded in chunks of 75 and concatenated.")


def _size_input(default: int, what: str) -> tuple:
    return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                    "tooltip": f"SDXL only (ignored for SD1.5): {what}, part of SDXL's size/crop conditioning "
                               "(add_time_ids)."})


def validate_clip_layer(stop_at_clip_layer) -> bool | str:
    if stop_at_clip_layer is None:  # linked: checked when the node runs
        return True
    try:
        v = float(stop_at_clip_layer)
    except (TypeError, ValueError):
        return f"stop_at_clip_layer must be a whole number, not {stop_at_clip_layer!r}"
    if v != int(v) or not MIN_CLIP_LAYER <= v <= 0:
        return (f"stop_at_clip_layer {stop_at_clip_layer} is outside {MIN_CLIP_LAYER}..0: -1 = last layer, "
                "-2 = penultimate (CLIP skip 2), 0 = the model's default")
    return True


def check_prompts(positive, negative) -> bool | str:
    """True or the message for a prompt nested too deeply (5,000 nested brackets were a RecursionError)."""
    for what, text in (("the positive prompt", positive), ("the negative prompt", negative)):
        msg = check_nesting(text, what)
        if msg:
            return msg
    return True


class VisionKitPromptEncode:
    DESCRIPTION = (
        "Encodes the positive and negative prompt with the pipeline's CLIP text encoder(s), as ComfyUI's CLIP Text "
        "Encode does: prompt weighting, 75-token chunks for long prompts, clip skip (stop_at_clip_layer). SDXL uses "
        "both encoders (CLIP-L + OpenCLIP-bigG, 2048 per token) and the pooled bigG output, plus the size/crop "
        "conditioning inputs. The pipeline's LoRAs apply to the text encoders with their text strength. An empty "
        "negative prompt is the empty prompt's encoding.")
    CATEGORY = f"{CATEGORY}/generation"
    FUNCTION = "encode"
    RETURN_TYPES = (CONDITIONING_TYPE,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = (("Positive and negative prompt embeddings (+ pooled and size conditioning for SDXL), for "
                        "the VisionKit sampler."),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE, {"tooltip": "The pipeline from 'VisionKit Load Pipeline' (after any "
                                                        "LoRA loaders): its text encoders encode the prompts."}),
                "positive": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                        "tooltip": "What the image should show. " + TEXT_TIP}),
                "negative": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                        "tooltip": "What the image should not show (empty = the empty prompt's "
                                                   "encoding, as in ComfyUI). " + TEXT_TIP}),
                "stop_at_clip_layer": ("INT", {
                    "default": 0, "min": MIN_CLIP_LAYER, "max": 0, "step": 1,
                    "tooltip": "Clip skip, ComfyUI's CLIP Set Last Layer convention: -1 = last layer, -2 = "
                               "penultimate (\"clip skip 2\"), … 0 = the model's default: last layer for SD1.5, "
                               "penultimate for SDXL. SD1.5 puts the chosen layer through the final layer norm; "
                               "SDXL uses it as it is (so -1 on SDXL is the raw last layer, as in ComfyUI)."}),
            },
            "optional": {
                "width": _size_input(1024, "the original image width"),
                "height": _size_input(1024, "the original image height"),
                "crop_w": _size_input(0, "the crop's left offset"),
                "crop_h": _size_input(0, "the crop's top offset"),
                "target_width": _size_input(1024, "the target width"),
                "target_height": _size_input(1024, "the target height"),
            },
        }

    # No VALIDATE_INPUTS: ComfyUI gives its message to every input it names, so a check of both prompts there
    # would show "the positive prompt is too deeply nested" on the negative prompt too (and on
    # stop_at_clip_layer, whose range ComfyUI checks itself from INPUT_TYPES). Each prompt's bracket depth is
    # checked when the node runs, before anything is encoded, naming that prompt.

    def encode(self, pipeline, positive: str, negative: str = "", stop_at_clip_layer: int = 0,
               width: int = 1024, height: int = 1024, crop_w: int = 0, crop_h: int = 0,
               target_width: int = 1024, target_height: int = 1024):
        if not isinstance(pipeline, PipelineHandle):
            raise GenerationError(f"'pipeline' must come from 'VisionKit Load Pipeline' (VK_PIPELINE), got "
                                  f"{type(pipeline).__name__}")
        check = validate_clip_layer(stop_at_clip_layer)
        if check is not True:
            raise GenerationError(check)
        msg = check_prompts(positive, negative)
        if msg is not True:
            raise GenerationError(msg)
        size = SizeCond(width=width, height=height, crop_w=crop_w, crop_h=crop_h, target_width=target_width,
                        target_height=target_height)
        return (encode_pair(pipeline, positive, negative, stop_at_clip_layer=int(stop_at_clip_layer), size=size),)
