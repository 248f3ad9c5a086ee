"""SAM Segment Everything: every object SAM finds on a grid of point prompts, as a mask batch sorted by area."""
from __future__ import annotations

import json

from ..models.perception.sam import SAM_MODEL_TYPE
from ..models.perception.sam_everything import (
    MAX_CROP_LAYERS,
    MAX_POINTS_PER_BATCH,
    MAX_POINTS_PER_SIDE,
    Settings,
    segment_everything,
)
from .common import CATEGORY
from .preview import with_preview


class VisionKitSAMSegmentEverything:
    DESCRIPTION = ("Segments everything in the image with SAM (segment-anything's SamAutomaticMaskGenerator on the "
                   "model from 'VisionKit Load SAM Model'): a grid of point prompts, masks kept by predicted IoU and "
                   "stability, duplicates removed. Outputs every mask as a MASK batch sorted by area (largest "
                   "first), a coloured overlay and JSON (area, box, scores). Nothing found is one empty mask.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "run"
    RETURN_TYPES = ("MASK", "IMAGE", "STRING", "INT")
    RETURN_NAMES = ("masks", "preview", "masks_json", "count")
    OUTPUT_TOOLTIPS = (
        "Every mask, largest first (all images' masks in one batch; masks_json says which image each is from). "
        "An image where nothing was found adds one empty mask.",
        "Each image with its masks in colours (smaller masks drawn over larger ones).",
        "Per image: [{\"image\", \"mask\" (index in masks), \"area\", \"bbox\" [x, y, w, h], \"predicted_iou\", "
        "\"stability_score\", \"point\"}, …].",
        "How many masks were found (all images).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        d = Settings()
        return {
            "required": {
                "sam_model": (SAM_MODEL_TYPE, {"tooltip": "From 'VisionKit Load SAM Model'."}),
                "image": ("IMAGE", {"tooltip": "The image(s) to segment; each is encoded once."}),
                "points_per_side": ("INT", {"default": d.points_per_side, "min": 1, "max": MAX_POINTS_PER_SIDE,
                                            "tooltip": "The grid of point prompts is this many points per side "
                                                       "(32 = 1024 prompts, SAM's default; 16 is 4× faster, with "
                                                       "fewer small masks)."}),
                "pred_iou_thresh": ("FLOAT", {"default": d.pred_iou_thresh, "min": 0.0, "max": 1.0, "step": 0.01,
                                              "tooltip": "Keep masks whose IoU predicted by SAM is above this "
                                                         "(lower = more, rougher masks)."}),
                "stability_score_thresh": ("FLOAT", {"default": d.stability_score_thresh, "min": 0.0, "max": 1.0,
                                                     "step": 0.01, "tooltip":
                                                     "Keep masks that stay the same when SAM's cut-off moves "
                                                     "(lower = more masks)."}),
                "min_mask_region_area": ("INT", {"default": d.min_mask_region_area, "min": 0, "max": 1 << 24,
                                                 "tooltip": "Remove islands and fill holes smaller than this many "
                                                            "pixels (0 = off)."}),
            },
            "optional": {
                "box_nms_thresh": ("FLOAT", {"default": d.box_nms_thresh, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Two masks whose boxes overlap more than this (IoU) are "
                                                        "duplicates; the better one is kept."}),
                "crop_n_layers": ("INT", {"default": d.crop_n_layers, "min": 0, "max": MAX_CROP_LAYERS,
                                          "tooltip": "Also segment zoomed crops (1 = 4 more crops; finds small "
                                                     "things, several times slower). 0 = the whole image only."}),
                "points_per_batch": ("INT", {"default": d.points_per_batch, "min": 1, "max": MAX_POINTS_PER_BATCH,
                                             "tooltip": "Prompts decoded at once: lower it when memory runs out "
                                                        "(the masks do not change)."}),
                "max_masks": ("INT", {"default": 0, "min": 0, "max": 4096,
                                      "tooltip": "Keep only the largest N masks per image (0 = all)."}),
            },
        }

    # No VALIDATE_INPUTS: every setting here is a range that ComfyUI checks at /prompt from INPUT_TYPES (the same
    # bounds as Settings.check), and a VALIDATE_INPUTS message would be repeated on every input it names.
    # segment_everything() checks them all again when the node runs (linked values, NaN), before SAM runs.

    def run(self, sam_model, image, points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95,
            min_mask_region_area=0, box_nms_thresh=0.7, crop_n_layers=0, points_per_batch=64, max_masks=0):
        settings = Settings(int(points_per_side), float(pred_iou_thresh), float(stability_score_thresh),
                            int(min_mask_region_area), float(box_nms_thresh), int(crop_n_layers),
                            int(points_per_batch))
        masks, preview, report = segment_everything(sam_model, image, settings, int(max_masks))
        count = sum(len(r) for r in report)
        return with_preview((masks, preview, json.dumps(report), count), preview, "VisionKitSAMEverything")
