"""ControlNet nodes: Load ControlNet, Apply ControlNet (a VK_CONTROL chain entry) and Canny Edges."""
from __future__ import annotations

from ..models.core import folders
from ..models.core.imageops import check_image
from ..models.perception.canny import canny_edges
from ..models.sd.controlnet import load_controlnet
from ..models.sd.types import (
    ARCH_NAMES,
    CONTROL_TYPE,
    CONTROLNET_TYPE,
    ControlEntry,
    GenerationError,
    append_control,
)
from .common import (
    CATEGORY,
    file_fingerprint,
    model_combo,
    strength_input,
    validate_model,
    window_inputs,
)
from .common import check_window as common_window

STRENGTH = (0.0, 10.0)


def check_window(start_percent, end_percent, strength) -> bool | str:
    """True or the message for Apply ControlNet's step window and strength (checked when the node runs)."""
    return common_window("the ControlNet", start_percent, end_percent, strength=(strength, STRENGTH))


class VisionKitControlNetLoader:
    DESCRIPTION = ("Loads an SD1.5 or SDXL ControlNet: original .safetensors/.pth files (control_model.*), diffusers "
                   "single files, or diffusers folders. The layout and SD1.5/SDXL are read from the weights; nothing "
                   "is downloaded.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (CONTROLNET_TYPE,)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The ControlNet, for Apply ControlNet.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet_name": model_combo("controlnet", "The ControlNet file or diffusers folder (SD1.5 or SDXL)."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, controlnet_name):
        return validate_model("controlnet", controlnet_name)

    @classmethod
    def IS_CHANGED(cls, controlnet_name):
        return file_fingerprint("controlnet", controlnet_name)

    def load(self, controlnet_name: str):
        return (load_controlnet(folders.resolve("controlnet", controlnet_name)),)


class VisionKitControlNetApply:
    DESCRIPTION = ("Adds a ControlNet with its hint image (e.g. Canny edges) to a VK_CONTROL chain for the sampler. "
                   "Chain several for multi-ControlNet: their effects add up. Takes no conditioning: the sampler "
                   "applies the chain to both prompts.")
    CATEGORY = f"{CATEGORY}/generation"
    FUNCTION = "apply"
    RETURN_TYPES = (CONTROL_TYPE,)
    RETURN_NAMES = ("control",)
    OUTPUT_TOOLTIPS = ("The chain with this ControlNet appended; connect it to the sampler or another Apply node.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "controlnet": (CONTROLNET_TYPE, {"tooltip": "From VisionKit Load ControlNet."}),
                "image": ("IMAGE", {"tooltip": "The hint image (edges, depth, pose ...), resized to the output size. "
                                               "One image for the whole batch, or one per generated image."}),
                "strength": strength_input(1.0, STRENGTH, "How strongly the ControlNet steers the image (0 = off)."),
                **window_inputs("the ControlNet"),
            },
            "optional": {
                "control": (CONTROL_TYPE, {"tooltip": "An existing chain (ControlNet, IP-Adapter, InstantID) to "
                                                      "append to."}),
            },
        }

    # No VALIDATE_INPUTS: start_percent < end_percent is a joint check, and ComfyUI would repeat its message on
    # both inputs (a VALIDATE_INPUTS message goes to every input it names). ComfyUI checks each value's range at
    # /prompt from INPUT_TYPES; the joint check (and the ranges again, for linked values and NaN) is done when
    # the node runs, before the chain is built: check_window().

    def apply(self, controlnet, image, strength=1.0, start_percent=0.0, end_percent=1.0, control=None):
        msg = check_window(start_percent, end_percent, strength)
        if msg is not True:
            raise GenerationError(msg)
        if control and control[0].arch != controlnet.arch:
            raise GenerationError(
                f"this ControlNet is {ARCH_NAMES.get(controlnet.arch)} but the control chain it is added to is for "
                f"{ARCH_NAMES.get(control[0].arch)}: every entry of a chain must match the pipeline's architecture")
        image = check_image(image, "image")[..., :3].detach().cpu()
        entry = ControlEntry(kind="controlnet", model=controlnet, arch=controlnet.arch, image=image,
                             strength=float(strength), start=float(start_percent), end=float(end_percent))
        return (append_control(control, entry),)


class VisionKitCannyEdges:
    DESCRIPTION = ("Canny edge map of each image (OpenCV), white edges on black: the hint for a Canny ControlNet. "
                   "Lower thresholds find more edges.")
    CATEGORY = f"{CATEGORY}/preprocessors"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edges",)
    OUTPUT_TOOLTIPS = ("The edge maps, same size and batch as the input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image(s) to trace."}),
            "low_threshold": ("INT", {"default": 100, "min": 0, "max": 255, "step": 1, "tooltip":
                              "Edges weaker than this (0-255 gradient scale) are dropped."}),
            "high_threshold": ("INT", {"default": 200, "min": 0, "max": 255, "step": 1, "tooltip":
                               "Edges stronger than this always count; weaker ones only when connected to them."}),
        }}

    # No VALIDATE_INPUTS: low_threshold <= high_threshold is a joint check, and ComfyUI would repeat its message
    # on both inputs. ComfyUI checks each threshold's range (0-255) at /prompt; canny_edges() refuses
    # low > high when the node runs ("... is above high_threshold ...; swap them"), before any image work.

    def run(self, image, low_threshold=100, high_threshold=200):
        return (canny_edges(image, low_threshold, high_threshold),)
