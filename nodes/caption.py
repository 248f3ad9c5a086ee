"""Caption nodes: the BLIP loader and image → caption text (a STRING that feeds Prompt Encode)."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception.caption import (
    CAPTION_MODEL_TYPE,
    MAX_BEAMS,
    MAX_TOKENS,
    caption,
    load_caption_model,
)
from ..models.perception.hf_folder import DTYPES
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model

DTYPE_TIP = "auto: fp16 on CUDA, fp32 on CPU; fp32 is exact everywhere."


class VisionKitCaptionLoader:
    DESCRIPTION = ("Loads a BLIP captioning model (Salesforce/blip-image-captioning-base or -large) from the blip "
                   "folder: the transformers folder with its tokenizer and image settings, read offline.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (CAPTION_MODEL_TYPE,)
    RETURN_NAMES = ("caption_model",)
    OUTPUT_TOOLTIPS = ("The BLIP model, for 'VisionKit Caption Image (BLIP)'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("blip", "The BLIP captioning folder, e.g. blip-image-captioning-base."),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": DTYPE_TIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        if model_name is None:
            return True
        return validate_model("blip", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint("blip", model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        spec, _entry = load_caption_model(folders.resolve("blip", model_name), dtype)
        return (spec,)


class VisionKitCaption:
    DESCRIPTION = ("Describes each image in words with BLIP (transformers' generate). An optional prefix makes it a "
                   "conditional caption that continues your words, e.g. 'a photography of'. The caption is a "
                   "STRING: connect it to Prompt Encode's positive input to prompt with it. Shows on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "caption"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("caption", "captions", "captions_json")
    OUTPUT_IS_LIST = (False, True, False)
    OUTPUT_TOOLTIPS = (
        "The caption (for a batch: one line per image), e.g. for Prompt Encode's positive prompt.",
        "One caption per image, as a list (nodes after it run once per caption).",
        "[{\"image\", \"caption\"}, …] with the settings used.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "caption_model": (CAPTION_MODEL_TYPE, {"tooltip": "From 'VisionKit Load Caption Model (BLIP)'."}),
                "image": ("IMAGE", {"tooltip": "The image(s) to describe; each image of a batch gets its own caption."}),
                "prefix": ("STRING", {"default": "", "multiline": False, "tooltip":
                           "Optional start of the caption that BLIP continues (conditional captioning), e.g. "
                           "'a photography of'. The caption begins with it. Empty = a plain caption."}),
                "max_tokens": ("INT", {"default": 30, "min": 1, "max": MAX_TOKENS, "tooltip":
                               "The most new word pieces BLIP writes (about 0.75 words each); it usually stops "
                               "earlier by itself."}),
                "num_beams": ("INT", {"default": 3, "min": 1, "max": MAX_BEAMS, "tooltip":
                              "1 = greedy decoding (fastest); 3–5 = beam search (BLIP's paper uses 3), usually "
                              "fuller captions."}),
            },
        }

    # No VALIDATE_INPUTS: max_tokens and num_beams are ranges that ComfyUI checks at /prompt from INPUT_TYPES (the
    # same bounds as check_settings), and a VALIDATE_INPUTS message would be repeated on every input it names.
    # caption() checks both again when the node runs (linked values), before BLIP runs.

    def caption(self, caption_model, image, prefix: str = "", max_tokens: int = 30, num_beams: int = 3):
        texts = caption(caption_model, image, prefix, int(max_tokens), int(num_beams))
        joined = "\n".join(texts)
        rows = [{"image": i, "caption": t} for i, t in enumerate(texts)]
        report = {"prefix": prefix, "max_tokens": int(max_tokens), "num_beams": int(num_beams), "captions": rows}
        shown = joined if len(texts) == 1 else "\n".join(f"image {i}: {t}" for i, t in enumerate(texts))
        return {"ui": {"text": [shown]}, "result": (joined, texts, to_json(report))}
