"""Segment Anything nodes: the loader and prompt → mask (boxes, points JSON, a MASK's bounding box)."""
from __future__ import annotations

import json

import torch

from ..models.core import folders, host
from ..models.core.cache import get_cache
from ..models.core.imageops import ImageInputError, check_image, check_mask
from ..models.perception.boxes import BOXES_TYPE
from ..models.perception.sam import (
    MULTIMASK,
    SAM_MODEL_TYPE,
    SamPromptError,
    build_objects,
    grow_and_feather,
    mask_box,
    overlay,
    parse_points_json,
    predict_image,
    sam_spec,
)
from .common import CATEGORY, file_fingerprint, model_combo, validate_model
from .preview import with_preview


class VisionKitSAMLoader:
    DESCRIPTION = ("Loads a segment-anything checkpoint (vit_b, vit_l, vit_h; .pth or .safetensors). The size is "
                   "read from the weights, so renamed files work.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (SAM_MODEL_TYPE,)
    RETURN_NAMES = ("sam_model",)
    OUTPUT_TOOLTIPS = ("The SAM model, for SAM Segment and Grounded SAM.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("sams", "The SAM checkpoint, e.g. sam_vit_b_01ec64.pth."),
            "dtype": (["fp32", "fp16"], {"default": "fp32", "tooltip": "fp32 is exact; fp16 halves the memory on "
                                                                       "a GPU (masks may differ at the edges)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return validate_model("sams", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="fp32"):
        return file_fingerprint("sams", model_name)

    def load(self, model_name: str, dtype: str = "fp32"):
        spec = sam_spec(folders.resolve("sams", model_name), dtype)
        get_cache().load(spec)
        return (spec,)


def boxes_for_image(boxes, index: int, batch: int) -> list:
    """The pixel boxes of image `index` from a VK_BOXES value (one list per image, or one for all)."""
    if boxes is None:
        return []
    if not isinstance(boxes, (list, tuple)):
        raise SamPromptError("boxes must come from a VisionKit detection node (VK_BOXES)")
    if len(boxes) not in (1, batch):
        raise SamPromptError(f"the boxes are for {len(boxes)} images but the image batch has {batch}")
    per = boxes[0] if len(boxes) == 1 else boxes[index]
    return [list(b["box"]) if isinstance(b, dict) else list(b) for b in per]


def segment(spec, image, boxes=None, points: str = "", mask_prompt=None, multimask: str = "best score",
            mask_threshold: float = 0.0, dilation: int = 0, feather: int = 0, output: str = "union"):
    """The work of VisionKitSAMSegment (also used by Grounded SAM): (MASK, preview IMAGE, scores JSON)."""
    image = check_image(image)
    b, h, w = image.shape[:3]
    pts, json_boxes = parse_points_json(points)
    prompt_masks = None
    if mask_prompt is not None:
        prompt_masks = check_mask(mask_prompt, "mask_prompt")
        if prompt_masks.shape[0] not in (1, b):
            raise ImageInputError(f"mask_prompt has a batch of {prompt_masks.shape[0]} but image has {b}; give one "
                                  "mask for all images or one per image")
    per_image = []
    for i in range(b):
        bx = boxes_for_image(boxes, i, b) + json_boxes
        if prompt_masks is not None:
            pm = prompt_masks[i if prompt_masks.shape[0] > 1 else 0]
            mb = mask_box(pm)  # at the mask's own size, then scaled: exact for masks of another size
            if mb is not None:
                sx, sy = w / pm.shape[1], h / pm.shape[0]
                bx.append([mb[0] * sx, mb[1] * sy, mb[2] * sx, mb[3] * sy])
        per_image.append(build_objects(bx, pts, w, h))
    progress = host.Progress(b)
    masks_out, previews, report = [], [], []
    with get_cache().use(spec) as sam:
        for i in range(b):
            res = predict_image(sam, image[i], per_image[i], multimask, mask_threshold)
            obj_masks = res.masks.any(dim=1).float() if res.masks.numel() else torch.zeros(0, h, w)
            obj_masks = grow_and_feather(obj_masks, dilation, feather)
            if output == "per object":
                masks_out.extend(list(obj_masks) if len(obj_masks) else [torch.zeros(h, w)])
            else:
                masks_out.append(obj_masks.amax(dim=0) if len(obj_masks) else torch.zeros(h, w))
            previews.append(overlay(image[i], obj_masks))
            report.append([{"object": j, "prompt": o.source, "box": o.box, "points": o.points,
                            "scores": [round(float(s), 4) for s in res.scores[j]]}
                           for j, o in enumerate(res.objects)])
            progress.update()
    return torch.stack(masks_out), torch.stack(previews), json.dumps(report)


class VisionKitSAMSegment:
    DESCRIPTION = ("Segments objects with SAM from boxes (e.g. from Grounding DINO), include/exclude points and "
                   "boxes drawn on the canvas, or a mask's bounding box. The image is encoded once, however many "
                   "prompts there are. No prompt gives an empty mask.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "run"
    RETURN_TYPES = ("MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("mask", "preview", "scores_json")
    OUTPUT_TOOLTIPS = ("One mask per image (union), or one per object.", "The image with the masks overlaid.",
                       "Per image, each object's prompt and SAM's predicted quality, as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam_model": (SAM_MODEL_TYPE, {"tooltip": "From VisionKit SAM Loader."}),
                "image": ("IMAGE", {"tooltip": "The image(s) to segment; prompts are in its pixels."}),
                "multimask": (list(MULTIMASK), {"default": "best score", "tooltip":
                              "SAM proposes 3 masks per prompt: keep the best-scored one, their union, or all "
                              "three; 'single' asks SAM for one mask (often best for box prompts)."}),
                "mask_threshold": ("FLOAT", {"default": 0.0, "min": -20.0, "max": 20.0, "step": 0.1, "tooltip":
                                   "Cut-off on SAM's mask logits: lower grows the masks, higher shrinks them "
                                   "(0 is SAM's own)."}),
                "dilation": ("INT", {"default": 0, "min": -128, "max": 128, "tooltip":
                             "Grow the mask by this many pixels (negative shrinks it), e.g. before inpainting."}),
                "feather": ("INT", {"default": 0, "min": 0, "max": 128, "tooltip":
                            "Soften the mask edge over this many pixels."}),
                "output": (["union", "per object"], {"default": "union", "tooltip":
                           "union: one mask per image; per object: one mask per prompt object."}),
            },
            "optional": {
                "boxes": (BOXES_TYPE, {"tooltip": "Boxes per image, e.g. from Grounding DINO Detect."}),
                "points": ("STRING", {"default": "", "multiline": False, "tooltip":
                           'Points and boxes in pixels of the first image: {"points": [[x, y, 1], [x, y, 0]], '
                           '"boxes": [[x0, y0, x1, y1]]}; 1 = include, 0 = exclude. Written by the canvas editor '
                           "or by API users; empty = none."}),
                "mask_prompt": ("MASK", {"tooltip": "A mask whose bounding box becomes a box prompt (an empty mask "
                                                    "is no prompt)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, points=""):
        try:
            parse_points_json(points)
        except SamPromptError as ex:
            return str(ex)
        return True

    def run(self, sam_model, image, multimask="best score", mask_threshold=0.0, dilation=0, feather=0,
            output="union", boxes=None, points="", mask_prompt=None):
        mask, preview, report = segment(sam_model, image, boxes, points, mask_prompt, multimask, mask_threshold,
                                        dilation, feather, output)
        # Inside ComfyUI the overlay also shows on the node (ui.images), so the canvas editor's result is seen.
        return with_preview((mask, preview, report), preview, "VisionKitSAM")
