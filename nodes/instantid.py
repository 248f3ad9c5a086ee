"""InstantID nodes: Load InstantID (adapter + IdentityNet) and Apply InstantID (a VK_CONTROL chain entry)."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception.faces import FACE_MODEL_TYPE
from ..models.sd.instantid import apply_instantid, load_instantid
from ..models.sd.types import CONTROL_TYPE, INSTANTID_TYPE
from .common import (
    CATEGORY,
    check_window,
    file_fingerprint,
    model_combo,
    strength_input,
    validate_model,
    window_inputs,
)

IP_WEIGHT = (0.0, 3.0)
CONTROLNET_STRENGTH = (0.0, 10.0)


def check_settings(start_percent=0.0, end_percent=1.0, ip_weight=0.8, controlnet_strength=0.8) -> bool | str:
    """True or the message for Apply InstantID's step window and strengths (checked when the node runs)."""
    return check_window("InstantID", start_percent, end_percent, ip_weight=(ip_weight, IP_WEIGHT),
                        controlnet_strength=(controlnet_strength, CONTROLNET_STRENGTH))


class VisionKitInstantIDLoader:
    DESCRIPTION = ("Loads InstantID for SDXL: the adapter (InstantX's ip-adapter.bin: face-embedding Resampler + "
                   "image-prompt attention weights) and its IdentityNet ControlNet (InstantX's ControlNetModel "
                   "folder or file). Nothing is downloaded; SD1.5 files are refused with a message.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (INSTANTID_TYPE,)
    RETURN_NAMES = ("instantid",)
    OUTPUT_TOOLTIPS = ("InstantID (adapter + IdentityNet), for Apply InstantID.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "instantid_name": model_combo("instantid", "InstantID's adapter, ip-adapter.bin (or a .safetensors "
                                                       "conversion)."),
            "controlnet_name": model_combo("controlnet", "InstantID's IdentityNet ControlNet (InstantX/InstantID "
                                                         "ControlNetModel: a folder with config.json, or its file)."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, instantid_name=None):
        # Only the adapter is named: ComfyUI gives a VALIDATE_INPUTS message to every input it names, so naming
        # controlnet_name too would show a missing adapter's message on both. controlnet_name gets ComfyUI's own
        # list check at /prompt ("Value not in list"); load() resolves it again with the pack's message.
        return True if instantid_name is None else validate_model("instantid", instantid_name)

    @classmethod
    def IS_CHANGED(cls, instantid_name, controlnet_name):
        return f"{file_fingerprint('instantid', instantid_name)}|{file_fingerprint('controlnet', controlnet_name)}"

    def load(self, instantid_name: str, controlnet_name: str):
        return (load_instantid(folders.resolve("instantid", instantid_name),
                               folders.resolve("controlnet", controlnet_name)),)


class VisionKitInstantIDApply:
    DESCRIPTION = ("Adds InstantID to a VK_CONTROL chain for the sampler (SDXL): the identity of the face in "
                   "face_image (several images: their face embeddings are averaged) through image-prompt attention, "
                   "and its 5 keypoints (or those of the face in pose_image) through the IdentityNet. The largest "
                   "face of each image is used. No face found is an error naming the image.")
    CATEGORY = f"{CATEGORY}/generation"
    FUNCTION = "apply"
    RETURN_TYPES = (CONTROL_TYPE, "IMAGE")
    RETURN_NAMES = ("control", "keypoints")
    OUTPUT_TOOLTIPS = ("The chain with InstantID appended; connect it to the sampler or another Apply node.",
                       "The keypoint image the IdentityNet sees (for preview), at the pose / face image's size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instantid": (INSTANTID_TYPE, {"tooltip": "From VisionKit Load InstantID."}),
                "face_model": (FACE_MODEL_TYPE, {"tooltip": "From VisionKit Load Face Analysis (antelopev2: its "
                                                            "ArcFace embeddings are what InstantID was trained on)."}),
                "face_image": ("IMAGE", {"tooltip": "The reference face(s). Several images: their face embeddings "
                                                    "are averaged (more references, steadier identity). The largest "
                                                    "face of each image is used."}),
                "ip_weight": strength_input(0.8, IP_WEIGHT, "How strongly the face identity steers the image (the "
                                                            "image-prompt attention scale; 0 = off)."),
                "controlnet_strength": strength_input(0.8, CONTROLNET_STRENGTH, "How strongly the IdentityNet holds the "
                                                      "face's position and pose (its ControlNet scale; 0 = off)."),
                **window_inputs("InstantID", " (attention and IdentityNet)"),
            },
            "optional": {
                "pose_image": ("IMAGE", {"tooltip": "Take the face position and pose from the face in this image "
                                                    "instead of the reference face (one keypoint image per pose "
                                                    "image). Best with the output's aspect ratio: the keypoint image "
                                                    "is resized to the output size."}),
                "control": (CONTROL_TYPE, {"tooltip": "An existing chain (ControlNet, IP-Adapter, InstantID) to "
                                                      "append to."}),
            },
        }

    # No VALIDATE_INPUTS: start_percent < end_percent is a joint check, and ComfyUI would repeat its message on
    # both inputs (a VALIDATE_INPUTS message goes to every input it names). ComfyUI checks each value's range at
    # /prompt from INPUT_TYPES; the joint check (and the ranges again, for linked values and NaN) is done when
    # the node runs, before any face is analysed: check_settings().

    def apply(self, instantid, face_model, face_image, ip_weight=0.8, controlnet_strength=0.8, start_percent=0.0,
              end_percent=1.0, pose_image=None, control=None):
        msg = check_settings(start_percent, end_percent, ip_weight, controlnet_strength)
        if msg is not True:
            raise ValueError(msg)
        chain, kps = apply_instantid(instantid, face_model, face_image, ip_weight, controlnet_strength, start_percent,
                                     end_percent, pose_image=pose_image, chain=control)
        return (chain, kps)
