"""VisionKitGroundedSAM: text → boxes (Grounding DINO) → masks (SAM) in one node, for the common case.

It is exactly Grounding DINO Detect followed by SAM Segment with those boxes (tested): the same
functions, the same defaults.
"""
from __future__ import annotations

from ..models.core.imageops import check_image
from ..models.perception import boxes as boxes_mod
from ..models.perception import grounding_dino_detect as gd
from ..models.perception.boxes import BOXES_TYPE
from ..models.perception.sam import MULTIMASK
from .common import CATEGORY
from .grounding_dino import VisionKitGroundingDINODetect, check_options
from .sam import VisionKitSAMSegment, segment


class VisionKitGroundedSAM:
    DESCRIPTION = ("Text → mask: Grounding DINO finds what the prompt describes, SAM cuts it out. 'shirt' masks "
                   "the shirt; prompt 'lion' with position left-most masks the left lion. Nothing found gives an "
                   "empty mask and a preview that says so.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "run"
    RETURN_TYPES = ("MASK", BOXES_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("mask", "boxes", "preview", "scores_json")
    OUTPUT_TOOLTIPS = ("One mask per image (union), or one per object.",
                       "The boxes Grounding DINO found (after the position / best-only / max options).",
                       "The image with the masks overlaid and the boxes and labels drawn.",
                       "Per image, each object's box and SAM's predicted quality, as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        dino = VisionKitGroundingDINODetect.INPUT_TYPES()
        sam = VisionKitSAMSegment.INPUT_TYPES()["required"]
        req = {
            "image": ("IMAGE", {"tooltip": "The image(s) to segment."}),
            "dino_model": dino["required"]["dino_model"],
            "sam_model": sam["sam_model"],
        }
        for k in ("prompt", "box_threshold", "text_threshold", "position", "best_only", "max_detections"):
            req[k] = dino["required"][k]
        for k in ("multimask", "mask_threshold", "dilation", "feather", "output"):
            req[k] = sam[k]
        return {"required": req, "optional": dict(dino.get("optional", {}))}

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        # As Grounding DINO Detect: only the prompt is named (a VALIDATE_INPUTS message goes to every input it
        # names); the numbers are range-checked by ComfyUI at /prompt and again when the node runs.
        return VisionKitGroundingDINODetect.VALIDATE_INPUTS(prompt=prompt)

    def run(self, image, dino_model, sam_model, prompt, box_threshold=gd.DEFAULT_BOX_THRESHOLD,
            text_threshold=gd.DEFAULT_TEXT_THRESHOLD, position="all", best_only=False, max_detections=0,
            multimask=MULTIMASK[0], mask_threshold=0.0, dilation=0, feather=0, output="union",
            resolution=gd.DEFAULT_RESOLUTION):
        check_options(max_detections, resolution)
        image = check_image(image)
        found = gd.detect(dino_model, image, prompt, box_threshold, text_threshold, max_detections=max_detections,
                          position=position, best_only=best_only, resolution=resolution)
        mask, overlay, report = segment(sam_model, image, found, "", None, multimask, mask_threshold, dilation,
                                        feather, output)
        preview = boxes_mod.draw_preview(overlay, found)
        return (mask, found, preview, report)
