"""IP-Adapter nodes: Load IP-Adapter (adapter + CLIP vision encoder) and Apply IP-Adapter (a VK_CONTROL entry)."""
from __future__ import annotations

from ..models.core import folders
from ..models.core.imageops import check_image, check_mask
from ..models.sd.ip_adapter import load_ipadapter
from ..models.sd.ip_adapter_run import COMBINE, MODES
from ..models.sd.types import (
    ARCH_NAMES,
    CONTROL_TYPE,
    IPADAPTER_TYPE,
    ControlEntry,
    GenerationError,
    append_control,
)
from .common import (
    CATEGORY,
    check_window,
    file_fingerprint,
    model_combo,
    strength_input,
    validate_model,
    window_inputs,
)

WEIGHT = (-1.0, 5.0)


def check_settings(start_percent=0.0, end_percent=1.0, weight=1.0, mode="standard", combine="average") -> bool | str:
    """True or the message for Apply IP-Adapter's step window, weight and options (checked when the node runs)."""
    window = check_window("the IP-Adapter", start_percent, end_percent, weight=(weight, WEIGHT))
    if window is not True:
        return window
    if mode not in MODES:
        return f"mode {mode!r} must be one of: {', '.join(MODES)}"
    if combine not in COMBINE:
        return f"combine {combine!r} must be one of: {', '.join(COMBINE)}"
    return True


class VisionKitIPAdapterLoader:
    DESCRIPTION = ("Loads an IP-Adapter (SD1.5 or SDXL: base, plus, plus-face, full-face; .safetensors or .bin from "
                   "h94/IP-Adapter) and the CLIP vision encoder it was trained with. The kind, SD1.5/SDXL and the "
                   "encoder it needs are read from the weights; a wrong pair is explained. Nothing is downloaded.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (IPADAPTER_TYPE,)
    RETURN_NAMES = ("ipadapter",)
    OUTPUT_TOOLTIPS = ("The IP-Adapter with its image encoder, for Apply IP-Adapter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ipadapter_name": model_combo("ipadapter", "The IP-Adapter weights (e.g. ip-adapter_sd15.safetensors, "
                                                       "ip-adapter-plus_sdxl_vit-h.safetensors)."),
            "clip_vision_name": model_combo("clip_vision", "The CLIP vision encoder the adapter was trained with: "
                                                           "ViT-H/14 (h94 models/image_encoder, e.g. "
                                                           "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors) for SD1.5 and "
                                                           "the *_vit-h SDXL adapters, ViT-bigG/14 for "
                                                           "ip-adapter_sdxl."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, ipadapter_name=None):
        # Only the adapter is named: ComfyUI gives a VALIDATE_INPUTS message to every input it names, so naming
        # clip_vision_name too would show a missing adapter's message on both. clip_vision_name gets ComfyUI's
        # own list check at /prompt ("Value not in list"); load() resolves it again with the pack's message.
        return True if ipadapter_name is None else validate_model("ipadapter", ipadapter_name)

    @classmethod
    def IS_CHANGED(cls, ipadapter_name, clip_vision_name):
        return f"{file_fingerprint('ipadapter', ipadapter_name)}|{file_fingerprint('clip_vision', clip_vision_name)}"

    def load(self, ipadapter_name: str, clip_vision_name: str):
        return (load_ipadapter(folders.resolve("ipadapter", ipadapter_name),
                               folders.resolve("clip_vision", clip_vision_name)),)


class VisionKitIPAdapterApply:
    DESCRIPTION = ("Adds an image prompt (IP-Adapter) to a VK_CONTROL chain for the sampler: the reference image(s) "
                   "steer the picture alongside the text prompt. 'style only' / 'composition only' act on the "
                   "InstantStyle blocks only. Chain several for several references or adapters; they add up.")
    CATEGORY = f"{CATEGORY}/generation"
    FUNCTION = "apply"
    RETURN_TYPES = (CONTROL_TYPE,)
    RETURN_NAMES = ("control",)
    OUTPUT_TOOLTIPS = ("The chain with this IP-Adapter appended; connect it to the sampler or another Apply node.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ipadapter": (IPADAPTER_TYPE, {"tooltip": "From VisionKit Load IP-Adapter."}),
                "image": ("IMAGE", {"tooltip": "The reference image(s). Centre-cropped to a square and resized to the "
                                               "image encoder's input (224 px for the real encoders)."}),
                "weight": strength_input(1.0, WEIGHT, "How strongly the reference steers the image (0 = off; 0.5–1 is "
                                                      "typical; with a text prompt, lower values keep more of the prompt)."),
                **window_inputs("the IP-Adapter"),
                "mode": (list(MODES), {"default": "standard", "tooltip":
                         "standard: every cross-attention layer. style only / composition only: InstantStyle's "
                         "blocks (SDXL up_blocks.0.attentions.1 / down_blocks.2.attentions.1; SD1.5 up_blocks.1 / "
                         "down_blocks.2, weaker), to take the reference's style or its layout without the rest."}),
                "combine": (list(COMBINE), {"default": "average", "tooltip":
                            "Several reference images: average their embeddings (one image's worth of tokens), or "
                            "concatenate their tokens (each image keeps its own)."}),
            },
            "optional": {
                "attn_mask": ("MASK", {"tooltip": "Where the reference acts (1 = here, 0 = not), in output-image "
                                                  "coordinates; resized to every attention layer. One mask for all "
                                                  "images or one per image."}),
                "control": (CONTROL_TYPE, {"tooltip": "An existing chain (ControlNet, IP-Adapter, InstantID) to "
                                                      "append to."}),
            },
        }

    # No VALIDATE_INPUTS: start_percent < end_percent is a joint check, and ComfyUI would repeat its message on
    # both inputs (a VALIDATE_INPUTS message goes to every input it names). ComfyUI checks weight's and each
    # percent's range at /prompt from INPUT_TYPES, mode and combine by their lists; the joint check (and the
    # others again, for linked values and NaN) is done when the node runs, before the chain is built:
    # check_settings().

    def apply(self, ipadapter, image, weight=1.0, start_percent=0.0, end_percent=1.0, mode="standard",
              combine="average", attn_mask=None, control=None):
        msg = check_settings(start_percent, end_percent, weight, mode, combine)
        if msg is not True:
            raise ValueError(msg)
        if control and control[0].arch != ipadapter.arch:
            raise GenerationError(
                f"this IP-Adapter is {ARCH_NAMES.get(ipadapter.arch)} but the control chain it is added to is for "
                f"{ARCH_NAMES.get(control[0].arch)}: every entry of a chain must match the pipeline's architecture")
        image = check_image(image, "image")[..., :3].detach().cpu()
        mask = check_mask(attn_mask, "attn_mask").detach().cpu() if attn_mask is not None else None
        entry = ControlEntry(kind="ipadapter", model=ipadapter, arch=ipadapter.arch, image=image,
                             strength=float(weight), start=float(start_percent), end=float(end_percent), mask=mask,
                             extra=(("mode", mode), ("combine", combine)))
        return (append_control(control, entry),)
