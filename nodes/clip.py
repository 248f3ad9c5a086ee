"""CLIP nodes: the loader, zero-shot classification of images against labels, ranking images against a text."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception.clip_model import (
    ACTIVATIONS,
    CLIP_MODEL_TYPE,
    DTYPES,
    load_clip_model,
)
from ..models.perception.clip_zero_shot import (
    parse_labels,
    rank_images,
    zero_shot,
)
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model

MODEL_TIP = "A CLIP model from 'VisionKit Load CLIP Model'."
IMAGE_TIP = "The images (a batch is processed image by image, in chunks; each gets its own result)."
TEMPLATE_TIP = ("Prompt template with {} where the text goes, e.g. 'a photo of {}.'. Several lines = several "
                "templates, averaged per text (CLIP's prompt ensembling). Empty = the texts as they are.")


def _validate_labels(labels) -> bool | str:
    if labels is None:  # linked: checked when the node runs
        return True
    try:
        parse_labels(labels)
    except ValueError as ex:
        return str(ex)
    return True


class VisionKitCLIPLoader:
    DESCRIPTION = ("Loads a CLIP model (image and text towers) from clip_models: an open_clip checkpoint "
                   "(.safetensors / .bin / .pt; its architecture is read from the weights, or from an "
                   "open_clip_config.json beside it) or a transformers CLIPModel folder. Everything loads "
                   "offline; the tokenizer is CLIP's BPE shipped with open_clip (or the folder's own files).")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (CLIP_MODEL_TYPE,)
    RETURN_NAMES = ("clip_model",)
    OUTPUT_TOOLTIPS = ("The CLIP model, for 'VisionKit CLIP Zero-Shot Classify' and 'VisionKit CLIP Rank Images'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("clip_models", "The CLIP model: an open_clip checkpoint or a transformers "
                                                     "CLIPModel folder."),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
            "activation": (list(ACTIVATIONS), {
                "default": "auto",
                "tooltip": "The MLP activation, which the weights do not record. OpenAI-trained CLIP needs "
                           "quick_gelu, LAION/DataComp-trained CLIP gelu. auto: the model's config when it has one, "
                           "else quick_gelu when the file name says 'openai' or 'quickgelu', else the library's "
                           "default (open_clip: gelu; a transformers file without config: quick_gelu)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        if model_name is None:
            return True
        return validate_model("clip_models", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto", activation="auto"):
        return file_fingerprint("clip_models", model_name)

    def load(self, model_name: str, dtype: str = "auto", activation: str = "auto"):
        path = folders.resolve("clip_models", model_name)
        spec, _entry = load_clip_model(path, dtype, activation)
        return (spec,)


def zero_shot_table(per_image: list, show: int) -> str:
    """A readable table: per image its best label, then the top `show` labels with probabilities."""
    lines = []
    for r in per_image:
        lines.append(f"image {r['image']}: {r['best']} ({r['probability'] * 100:.1f}%)")
        rows = r["labels"] if show <= 0 else r["labels"][:show]
        width = max(len(x["label"]) for x in rows)
        for x in rows:
            lines.append(f"  {x['label']:<{width}}  {x['probability'] * 100:6.2f}%  sim {x['similarity']:+.3f}")
        if len(rows) < len(r["labels"]):
            lines.append(f"  … {len(r['labels']) - len(rows)} more")
    return "\n".join(lines)


class VisionKitCLIPZeroShot:
    DESCRIPTION = ("Zero-shot classification: which of the candidate texts (one per line) fits each image best. "
                   "Per image: the best label and its probability (softmax over the labels, with the model's "
                   "temperature), and every label sorted as JSON. The table shows on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "classify"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("label", "probability", "scores_json")
    OUTPUT_IS_LIST = (True, True, False)
    OUTPUT_TOOLTIPS = (
        "The best label of each image (a list: one per image of the batch).",
        "The probability of that label, 0..1 (a list: one per image).",
        ("Every image with all labels sorted by probability: [{\"image\", \"best\", \"probability\", \"labels\": "
         "[{\"label\", \"probability\", \"similarity\", \"logit\"}, …]}, …]."),
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_model": (CLIP_MODEL_TYPE, {"tooltip": MODEL_TIP}),
                "image": ("IMAGE", {"tooltip": IMAGE_TIP}),
                "labels": ("STRING", {"multiline": True, "default": "a cat\na dog\na car",
                                      "tooltip": "The candidate texts, one per line. Blank lines and lines of only "
                                                 ", ; | are ignored; duplicates count once."}),
                "template": ("STRING", {"multiline": True, "default": "a photo of {}.", "tooltip": TEMPLATE_TIP}),
            },
            "optional": {
                "show_top": ("INT", {"default": 5, "min": 0, "max": 1000,
                                     "tooltip": "How many labels per image the table on the node shows (0 = all). "
                                                "The JSON output always has all of them."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, labels=None):
        # Only labels is named: ComfyUI gives a VALIDATE_INPUTS message to every input it names, so checking the
        # template here too would show an empty-labels message on the template as well. A template without {}
        # is refused when the node runs (zero_shot parses it before any image is encoded).
        return _validate_labels(labels)

    def classify(self, clip_model, image, labels: str, template: str = "", show_top: int = 5):
        res = zero_shot(clip_model, image, labels, template)
        best = [r["best"] for r in res.per_image]
        probs = [float(r["probability"]) for r in res.per_image]
        text = zero_shot_table(res.per_image, int(show_top))
        return {"ui": {"text": [text]}, "result": (best, probs, to_json(res.per_image))}


def rank_table(rows: list, text: str) -> str:
    lines = [f"images ranked against: {text.strip()}"]
    for r in rows:
        lines.append(f"  #{r['rank'] + 1}: image {r['index']}  sim {r['similarity']:+.4f}  "
                     f"p {r['probability'] * 100:6.2f}%")
    return "\n".join(lines)


class VisionKitCLIPRankImages:
    DESCRIPTION = ("Ranks a batch of images against one text with CLIP (cosine similarity of their embeddings): "
                   "the images sorted best match first (optionally only the top k), the best image's index and "
                   "similarity, and every image's score as JSON. The ranking shows on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "rank"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("sorted_images", "best_index", "best_similarity", "scores_json")
    OUTPUT_TOOLTIPS = (
        "The images sorted by similarity to the text, best first (only the top k when top_k > 0).",
        "Index (in the input batch, from 0) of the image that matches the text best.",
        "Cosine similarity of that image to the text (-1..1; CLIP scores of real matches are typically 0.2–0.4).",
        ("Every image, best first: [{\"rank\", \"index\", \"similarity\", \"probability\", \"logit\"}, …]; "
         "probability is the softmax over the images ('which image is the text about')."),
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_model": (CLIP_MODEL_TYPE, {"tooltip": MODEL_TIP}),
                "images": ("IMAGE", {"tooltip": "The batch of images to rank."}),
                "text": ("STRING", {"multiline": True, "default": "a photo of a cat",
                                    "tooltip": "What the images should show; line breaks count as spaces."}),
            },
            "optional": {
                "template": ("STRING", {"multiline": True, "default": "", "tooltip": TEMPLATE_TIP}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 4096,
                                  "tooltip": "Keep only the k best images in sorted_images (0 = all of them)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, text=None):
        # Only text is named (a VALIDATE_INPUTS message goes to every input it names); a template without {} is
        # refused when the node runs (rank_images parses it before any image is encoded).
        if text is not None and (not isinstance(text, str) or not text.strip()):
            return "the text to rank the images against is empty; describe what you look for, e.g. 'a red car'"
        return True

    def rank(self, clip_model, images, text: str, template: str = "", top_k: int = 0):
        import torch

        res = rank_images(clip_model, images, text, template)
        order = res.order if top_k <= 0 else res.order[:int(top_k)]
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        sorted_images = batch.index_select(0, torch.tensor(order, dtype=torch.long, device=batch.device))
        best = res.order[0]
        return {"ui": {"text": [rank_table(res.rows, text)]},
                "result": (sorted_images, int(best), float(res.similarity[best]), to_json(res.rows))}
