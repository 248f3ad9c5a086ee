"""Grounding DINO nodes: the loader and text-prompted detection (boxes, preview, mask)."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception import boxes as boxes_mod
from ..models.perception import grounding_dino_detect as gd
from ..models.perception.boxes import BOXES_TYPE
from ..models.perception.grounding_dino import DINO_MODEL_TYPE, load_dino_model
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model

KEY = "grounding-dino"


def check_options(max_detections, resolution) -> None:
    """Run-time check of the two whole-number options (the model checks the thresholds, position, prompt)."""
    for name, v, lo, hi, tip in (("max_detections", max_detections, 0, None, " (0 = no limit)"),
                                 ("resolution", resolution, 64, 2048, f" ({gd.DEFAULT_RESOLUTION} is the model's own)")):
        whole = isinstance(v, int) and not isinstance(v, bool)
        if not whole or v < lo or (hi is not None and v > hi):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise gd.GroundingDinoError(f"{name} must be a whole number {span}{tip}, got {v!r}")


class VisionKitGroundingDINOLoader:
    DESCRIPTION = ("Loads a Grounding DINO detector from models/grounding-dino: a transformers folder "
                   "(config.json + weights + tokenizer), or an original IDEA checkpoint "
                   "(groundingdino_swint_ogc.pth / groundingdino_swinb_cogcoor.pth) converted on load, with its "
                   "BERT tokenizer files (vocab.txt, tokenizer_config.json) beside it. Swin-T / Swin-B is read "
                   "from the weights.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DINO_MODEL_TYPE,)
    RETURN_NAMES = ("dino_model",)
    OUTPUT_TOOLTIPS = ("The Grounding DINO model, for VisionKit Grounding DINO Detect and Grounded SAM.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo(KEY, "The Grounding DINO checkpoint (.pth / .safetensors) or folder."),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {
                "default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU. fp32 gives the reference scores."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        # Only model_name is named (ComfyUI gives a VALIDATE_INPUTS message to every input it names); dtype gets
        # ComfyUI's own list check. None: a linked input, checked when the node runs.
        return True if model_name is None else validate_model(KEY, model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint(KEY, model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        path = folders.resolve(KEY, model_name)
        spec, _entry = load_dino_model(path, dtype)
        return (spec,)


class VisionKitGroundingDINODetect:
    DESCRIPTION = ("Finds what the prompt describes with Grounding DINO: 'lion . dog' finds lions and dogs, a "
                   "phrase such as 'the left lion' works too. The position option picks one box among the "
                   "detections (e.g. prompt 'lion' + left-most = the left lion). Returns the boxes (VK_BOXES, "
                   "pixels of each image), a preview with boxes and labels, and a mask of the boxes. Nothing "
                   "found is a normal result: no boxes, an empty mask, and a preview saying so.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "detect"
    RETURN_TYPES = (BOXES_TYPE, "IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("boxes", "preview", "mask", "boxes_json")
    OUTPUT_TOOLTIPS = (
        "Per image a list of {box: [x0, y0, x1, y1] (pixels, x1/y1 exclusive), score, label}, highest score first.",
        "The images with the boxes and their labels drawn; 'no detection' where nothing was found.",
        "1 inside the boxes of each image, 0 elsewhere (empty where nothing was found).",
        "The boxes as JSON text.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dino_model": (DINO_MODEL_TYPE, {"tooltip": "From VisionKit Grounding DINO Loader."}),
                "image": ("IMAGE", {"tooltip": "The image(s) to search; every image of the batch is searched."}),
                "prompt": ("STRING", {
                    "default": "person .", "multiline": False,
                    "tooltip": "What to find: phrases separated by '.' (or new lines), e.g. 'lion . dog', or a "
                               "phrase such as 'the left lion'. Lower/upper case does not matter."}),
                "box_threshold": ("FLOAT", {
                    "default": gd.DEFAULT_BOX_THRESHOLD, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Keep a box when its best score is above this (higher = fewer, surer boxes)."}),
                "text_threshold": ("FLOAT", {
                    "default": gd.DEFAULT_TEXT_THRESHOLD, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "A prompt word goes into a box's label when its score is above this."}),
                "max_detections": ("INT", {
                    "default": 0, "min": 0, "max": 900, "step": 1,
                    "tooltip": "At most this many boxes per image, the highest scores (0 = no limit). Applied "
                               "last, after position and best-only."}),
                "position": (list(boxes_mod.POSITIONS), {
                    "default": "all",
                    "tooltip": "Pick one box among the detections: left-most / right-most (by the box centre), "
                               "top-most / bottom-most, largest / smallest (by area); all = keep every box."}),
                "best_only": ("BOOLEAN", {
                    "default": False, "label_on": "best box only", "label_off": "all boxes",
                    "tooltip": "Keep only the box with the highest score (after the position option)."}),
            },
            "optional": {
                "resolution": ("INT", {
                    "default": gd.DEFAULT_RESOLUTION, "min": 64, "max": 2048, "step": 16,
                    "tooltip": "Shortest image side the model sees (the longest is capped at 1333/800 of it). "
                               "800 is what the model was trained with; smaller is faster, finds less."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        # Only the prompt is named: ComfyUI gives a VALIDATE_INPUTS message to every input it names and skips its
        # own min/max and list checks for them. The thresholds, max_detections and resolution are range-checked by
        # ComfyUI at /prompt from INPUT_TYPES, position by its list; detect() checks them all again when the node
        # runs (linked values, NaN), before the model is touched.
        if prompt is None:  # linked: checked when the node runs
            return True
        try:
            gd.normalize_prompt(prompt)
        except ValueError as ex:
            return str(ex)
        return True

    def detect(self, dino_model, image, prompt: str, box_threshold: float = gd.DEFAULT_BOX_THRESHOLD,
               text_threshold: float = gd.DEFAULT_TEXT_THRESHOLD, max_detections: int = 0, position: str = "all",
               best_only: bool = False, resolution: int = gd.DEFAULT_RESOLUTION):
        from ..models.core.imageops import check_image

        check_options(max_detections, resolution)
        image = check_image(image)
        found = gd.detect(dino_model, image, prompt, box_threshold, text_threshold, max_detections=max_detections,
                          position=position, best_only=best_only, resolution=resolution)
        b, h, w = image.shape[:3]
        mask = boxes_mod.boxes_to_mask(found, h, w, batch=b)
        preview = boxes_mod.draw_preview(image, found)
        return (found, preview, mask, to_json(found))
