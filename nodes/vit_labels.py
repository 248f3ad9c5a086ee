"""Image label nodes (ViT classifier): the loader and image → top-k labels with probabilities."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception.hf_folder import DTYPES
from ..models.perception.vit_labels import (
    LABELS_MODEL_TYPE,
    MAX_TOP_K,
    LabelsError,
    check_top_k,
    classify,
    load_labels_model,
)
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model


class VisionKitImageLabelsLoader:
    DESCRIPTION = ("Loads a ViT image classifier (e.g. google/vit-base-patch16-224, the 1000 ImageNet classes) "
                   "from the vit folder: the transformers folder with its label names and image settings, read "
                   "offline.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (LABELS_MODEL_TYPE,)
    RETURN_NAMES = ("labels_model",)
    OUTPUT_TOOLTIPS = ("The classifier, for 'VisionKit Image Labels (ViT)'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("vit", "The ViT classifier folder, e.g. vit-base-patch16-224."),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        if model_name is None:
            return True
        return validate_model("vit", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint("vit", model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        spec, _entry = load_labels_model(folders.resolve("vit", model_name), dtype)
        return (spec,)


def labels_table(per_image: list) -> str:
    lines = []
    for r in per_image:
        lines.append(f"image {r['image']}: {r['best']} ({r['probability'] * 100:.1f}%)")
        width = max(len(x["label"]) for x in r["labels"])
        for x in r["labels"]:
            lines.append(f"  {x['label']:<{width}}  {x['probability'] * 100:6.2f}%")
    return "\n".join(lines)


class VisionKitImageLabels:
    DESCRIPTION = ("What the image shows, as the classifier's top-k labels with probabilities (softmax over all "
                   "its classes, as transformers' image-classification pipeline). Per image: the best label and "
                   "its probability, and the top k as JSON. The table shows on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "label"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("label", "probability", "labels_json")
    OUTPUT_IS_LIST = (True, True, False)
    OUTPUT_TOOLTIPS = (
        "The best label of each image (a list: one per image of the batch).",
        "Its probability, 0..1 (a list: one per image).",
        "Every image with its top k labels: [{\"image\", \"best\", \"probability\", \"labels\": [{\"label\", "
        "\"probability\", \"index\"}, …]}, …].",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "labels_model": (LABELS_MODEL_TYPE, {"tooltip": "From 'VisionKit Load Image Labels Model (ViT)'."}),
            "image": ("IMAGE", {"tooltip": "The image(s) to label; each image of a batch gets its own labels."}),
            "top_k": ("INT", {"default": 5, "min": 1, "max": MAX_TOP_K,
                              "tooltip": "How many labels per image (highest probability first)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, top_k=None):
        if top_k is None:
            return True
        try:
            check_top_k(top_k)
        except LabelsError as ex:
            return str(ex)
        return True

    def label(self, labels_model, image, top_k: int = 5):
        res = classify(labels_model, image, int(top_k))
        return {"ui": {"text": [labels_table(res)]},
                "result": ([r["best"] for r in res], [float(r["probability"]) for r in res], to_json(res))}
