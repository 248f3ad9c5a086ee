"""Load LoRA: adds a LoRA to a VK_PIPELINE (chainable); the prompt encoder and sampler apply it (sd_lora_apply)."""
from __future__ import annotations

import logging
import math

from ..models.core import folders
from ..models.core.cache import get_cache
from ..models.sd.lora import check_fits, load_lora
from ..models.sd.types import PIPELINE_TYPE, LoraRef, arch_mismatch
from .common import CATEGORY, file_fingerprint, model_combo, validate_model

log = logging.getLogger("visionkit")


class VisionKitLoraLoader:
    DESCRIPTION = ("Adds a LoRA (kohya, diffusers/PEFT, LCM-LoRA, LyCORIS LoHa/LoKr; SD1.5 or SDXL) to the "
                   "pipeline. Chain several loaders for several LoRAs. The LoRA is patched into the cached model once and kept while runs "
                   "ask for the same LoRAs and strengths; a run without it gets the exact original weights back, "
                   "and other workflows using the same pipeline never see it.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The pipeline with this LoRA added after any LoRAs it already had.",)

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}
        return {"required": {
            "pipeline": (PIPELINE_TYPE, {"tooltip": "From VisionKit Load Pipeline (or another Load LoRA)."}),
            "lora_name": model_combo("loras", "The LoRA file; SD1.5 or SDXL, matching the pipeline."),
            "strength_model": ("FLOAT", {**strength, "tooltip": "How strongly the LoRA changes the UNet (0 = not at "
                                         "all, 1 = as trained, negative inverts it)."}),
            "strength_clip": ("FLOAT", {**strength, "tooltip": "How strongly the LoRA changes the text encoder(s); "
                                        "LoRAs without text-encoder weights (e.g. LCM-LoRA) ignore it."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name=None):
        # Only lora_name is named (ComfyUI gives a VALIDATE_INPUTS message to every input it names, and skips
        # its own min/max check for them): the strengths are range-checked by ComfyUI at /prompt, and load()
        # refuses a NaN strength (which passes any min/max) when the node runs.
        return True if lora_name is None else validate_model("loras", lora_name)

    @classmethod
    def IS_CHANGED(cls, lora_name, **_):
        return file_fingerprint("loras", lora_name)

    def load(self, pipeline, lora_name: str, strength_model: float = 1.0, strength_clip: float = 1.0):
        for n, v in (("strength_model", strength_model), ("strength_clip", strength_clip)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{n} must be a finite number, not {v!r}: set it between -10 and 10 (1 = as "
                                 "trained, 0 = off)")
        spec, lf = load_lora(folders.resolve("loras", lora_name))
        log.info("VisionKit: LoRA %s: %s", lora_name, lf.describe())
        arch = lf.arch
        if arch is not None and arch != pipeline.arch:
            raise arch_mismatch("LoRA", arch, pipeline.arch)
        comps = get_cache().load(pipeline.spec).value  # shapes only: the cached pipeline, not moved to the GPU
        for note in check_fits(lf, comps):  # a LoRA for another model fails here, not in the sampler
            log.warning("VisionKit: LoRA %s: %s", lora_name, note)
        ref = LoraRef(spec=spec, arch=pipeline.arch, strength_unet=float(strength_model),
                      strength_text=float(strength_clip), name=lora_name)
        return (pipeline.with_lora(ref),)
