"""Upscale nodes: the model loader (any spandrel core architecture) and the tiled upscaler (the work is in
models/upscale/: arch.py loads, tiles.py runs)."""
from __future__ import annotations

import math

from ..models.core import folders
from ..models.core.cache import ModelSpec
from ..models.core.imageops import check_image
from ..models.upscale.arch import DTYPES, UPSCALE_MODEL_TYPE, load_upscale_model
from ..models.upscale.tiles import (
    ALPHA_MODES,
    DEFAULT_TILE,
    DEFAULT_TILE_PAD,
    MAX_TILE_BATCH,
    MIN_TILE,
    upscale_image,
)
from .common import CATEGORY, file_fingerprint, model_combo, validate_model


class VisionKitUpscaleModelLoader:
    DESCRIPTION = ("Loads an upscale model of any architecture spandrel's core package knows (as ComfyUI's own "
                   "loader does): Real-ESRGAN (x4plus, x2plus, anime_6B, general-x4v3 …), ESRGAN in the old layout "
                   "(4x-UltraSharp and most community models), SwinIR, Swin2SR, HAT, DAT, OmniSR, SPAN, compact, "
                   "1x restoration models. The architecture and scale are read from the weights, never the name.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (UPSCALE_MODEL_TYPE,)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("The upscale model, for VisionKit Upscale.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("upscale_models", "The upscale model weights (.pth or .safetensors)."),
            "dtype": (list(DTYPES), {"default": "auto",
                                     "tooltip": "auto: fp16 on CUDA (bf16 or fp32 for architectures that cannot "
                                                "run fp16, such as SwinIR), fp32 on CPU. A half dtype the "
                                                "architecture does not support falls back to fp32."}),
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


MAX_TILE = 8192
MAX_TILE_PAD = 256
MAX_OUTSCALE = 16.0


def _number_error(name: str, value, whole: bool):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or (whole and not float(value).is_integer()):
        kind = "a whole number" if whole else "a finite number"
        return f"{name} must be {kind}, not {str(value)[:40]!r}"
    return None


def _check_tile_size(tile_size):
    """True or the message for tile_size (None = linked: checked when the node runs)."""
    if tile_size is None:
        return True
    msg = _number_error("tile_size", tile_size, True)
    if msg:
        return msg
    if not (tile_size == 0 or MIN_TILE <= tile_size <= MAX_TILE):
        return (f"tile_size {tile_size} must be 0 (whole image) or between {MIN_TILE} and {MAX_TILE}; "
                f"smaller tiles are slow and gain nothing")
    return True


def check_settings(outscale=None, tile_size=None, tile_pad=None, alpha_upscale=None, tile_batch=None):
    """True or the first problem with the upscale settings, in words (None = not given). Run time."""
    # ComfyUI also calls the node with the raw value when its own int()/float() conversion failed ("x").
    for name, value, whole in (("outscale", outscale, False), ("tile_pad", tile_pad, True),
                               ("tile_batch", tile_batch, True)):
        if value is not None:
            msg = _number_error(name, value, whole)
            if msg:
                return msg
    if outscale is not None and not (outscale == 0 or 0 < outscale <= MAX_OUTSCALE):
        return f"outscale {outscale} must be 0 (the model's own scale) or between 0 and {MAX_OUTSCALE:g}"
    msg = _check_tile_size(tile_size)
    if msg is not True:
        return msg
    if tile_pad is not None and not 0 <= tile_pad <= MAX_TILE_PAD:
        return f"tile_pad {tile_pad} must be between 0 and {MAX_TILE_PAD}"
    if alpha_upscale is not None and alpha_upscale not in ALPHA_MODES:
        return f"alpha_upscale {alpha_upscale!r} must be one of {', '.join(ALPHA_MODES)}"
    if tile_batch is not None and not 0 <= tile_batch <= MAX_TILE_BATCH:
        return f"tile_batch {tile_batch} must be between 0 (automatic) and {MAX_TILE_BATCH}"
    return True


class VisionKitUpscale:
    DESCRIPTION = ("Upscales images with an upscale model, tile by tile so that large images fit in memory; "
                   "the tiles are seamless (each reads tile_pad pixels of context and keeps only its own area). "
                   "RGBA images keep their alpha, upscaled too. outscale resizes the network's result to any "
                   "factor, like Real-ESRGAN's --outscale. What cannot fit in free memory is refused up front with "
                   "an estimate.")
    CATEGORY = f"{CATEGORY}/upscale"
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The upscaled images (RGBA stays RGBA).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "upscale_model": (UPSCALE_MODEL_TYPE, {"tooltip": "A model from 'VisionKit Load Upscale Model'."}),
                "image": ("IMAGE", {"tooltip": "The images to upscale (a batch is upscaled image by image; an "
                                               "alpha channel is kept)."}),
                "outscale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_OUTSCALE, "step": 0.05,
                                       "tooltip": "Final scale factor. 0 = the model's own (x4 for x4plus, x2 for "
                                                  "x2plus). Any other value resizes the network's output (Lanczos) "
                                                  "to int(size * outscale), like Real-ESRGAN's --outscale."}),
                "tile_size": ("INT", {"default": DEFAULT_TILE, "min": 0, "max": MAX_TILE, "step": 8,
                                      "tooltip": f"Tile size in input pixels; 0 = the whole image at once (fastest, "
                                                 f"most memory), else at least {MIN_TILE}. Lower it if you run "
                                                 "out of memory."}),
                "tile_pad": ("INT", {"default": DEFAULT_TILE_PAD, "min": 0, "max": MAX_TILE_PAD, "step": 1,
                                     "tooltip": "Overlap: pixels of context each tile reads around its own area "
                                                "(Real-ESRGAN's tile_pad). More hides seams better and costs time; "
                                                f"the default {DEFAULT_TILE_PAD} is seamless."}),
            },
            "optional": {
                "alpha_upscale": (list(ALPHA_MODES), {"default": "network",
                                                      "tooltip": "How an RGBA image's alpha is upscaled: through "
                                                                 "the network (as Real-ESRGAN does by default, "
                                                                 "costs a second pass), or resized bicubic / "
                                                                 "bilinear (fast)."}),
                "tile_batch": ("INT", {"default": 0, "min": 0, "max": MAX_TILE_BATCH,
                                       "tooltip": "Tiles per network call; 0 = automatic (1 on CPU, what fits in "
                                                  "free memory on CUDA). All tiles have one size, so they batch."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, tile_size=None):
        # Only tile_size is named here: ComfyUI repeats a VALIDATE_INPUTS message once per named input and
        # skips its own min/max check for each of them. tile_size needs a check its min/max cannot do (0, or
        # at least MIN_TILE); outscale, tile_pad and tile_batch are range-checked by ComfyUI from INPUT_TYPES,
        # alpha_upscale by its list. upscale() checks every setting again (linked values, NaN).
        return _check_tile_size(tile_size)

    def upscale(self, upscale_model, image, outscale=0.0, tile_size=DEFAULT_TILE, tile_pad=DEFAULT_TILE_PAD,
                alpha_upscale="network", tile_batch=0):
        if not isinstance(upscale_model, ModelSpec) or upscale_model.kind != "upscale":
            raise ValueError(f"upscale_model is a {type(upscale_model).__name__}, not an upscale model; connect "
                             "the output of 'VisionKit Load Upscale Model'")
        msg = check_settings(outscale, tile_size, tile_pad, alpha_upscale, tile_batch)
        if msg is not True:
            raise ValueError(msg)
        image = check_image(image)
        out = upscale_image(upscale_model, image, outscale=outscale or None, tile=tile_size, tile_pad=tile_pad,
                            tile_batch=tile_batch, alpha_mode=alpha_upscale)
        return (out,)
