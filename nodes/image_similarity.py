"""Image similarity nodes (DINOv2): the loader, two images → a similarity, a batch ranked against a reference."""
from __future__ import annotations

from ..models.core import folders
from ..models.perception.hf_folder import DTYPES
from ..models.perception.image_similarity import (
    COMBINE,
    POOLING,
    SIMILARITY_MODEL_TYPE,
    compare,
    load_similarity_model,
    rank,
)
from .common import CATEGORY, file_fingerprint, model_combo, to_json, validate_model

MODEL_TIP = "A DINOv2 model from 'VisionKit Load Image Similarity Model (DINOv2)'."
POOLING_TIP = ("cls: the model's pooled CLS embedding (the usual image descriptor); mean patch: the mean of the "
               "patch tokens (more about textures and layout).")


class VisionKitImageSimilarityLoader:
    DESCRIPTION = ("Loads a DINOv2 model (facebook/dinov2-small / -base / -large) from the dinov2 folder: the "
                   "transformers folder with its image settings, read offline. Its embeddings compare whole "
                   "images: near-duplicates, same object, same scene.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (SIMILARITY_MODEL_TYPE,)
    RETURN_NAMES = ("similarity_model",)
    OUTPUT_TOOLTIPS = ("The DINOv2 model, for 'VisionKit Image Similarity' and 'VisionKit Rank Similar Images'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("dinov2", "The DINOv2 folder, e.g. dinov2-base."),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        if model_name is None:
            return True
        return validate_model("dinov2", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        return file_fingerprint("dinov2", model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        spec, _entry = load_similarity_model(folders.resolve("dinov2", model_name), dtype)
        return (spec,)


def similarity_text(value: float, combine: str, matrix: list, show: int = 20) -> str:
    n = sum(len(r) for r in matrix)
    how = "one pair" if n == 1 else f"{combine} of {n} pairs"
    lines = [f"image similarity {value:.4f} ({how}; cosine of DINOv2 embeddings, 1 = identical)"]
    if n > 1:
        shown = 0
        for i, row in enumerate(matrix):
            for j, s in enumerate(row):
                if shown < show:
                    lines.append(f"  A image {i} × B image {j}: {s:.4f}")
                shown += 1
        if n > show:
            lines.append(f"  … {n - show} more pairs in pairs_json")
    return "\n".join(lines)


class VisionKitImageSimilarity:
    DESCRIPTION = ("How alike two images are, as a whole (cosine similarity of DINOv2 embeddings, -1..1; "
                   "near-duplicates score above about 0.9). Batches compare every pair, combined by mean / max / "
                   "min. Shows the result on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "compare"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("similarity", "text", "pairs_json")
    OUTPUT_TOOLTIPS = ("The similarity (-1..1; one pair, or the combined value of all pairs).",
                       "The readout shown on the node.",
                       "[{\"a\", \"b\", \"similarity\"}, …]: every pair (image indexes from 0).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "similarity_model": (SIMILARITY_MODEL_TYPE, {"tooltip": MODEL_TIP}),
            "image_a": ("IMAGE", {"tooltip": "First image(s), e.g. the reference."}),
            "image_b": ("IMAGE", {"tooltip": "Second image(s), e.g. the generated images."}),
            "pooling": (list(POOLING), {"default": "cls", "tooltip": POOLING_TIP}),
            "combine": (list(COMBINE), {"default": "mean", "tooltip":
                        "How several pairs become one number: their mean, the best (max) or the worst (min)."}),
        }}

    def compare(self, similarity_model, image_a, image_b, pooling="cls", combine="mean"):
        res = compare(similarity_model, image_a, image_b, pooling, combine)
        pairs = [{"a": i, "b": j, "similarity": s} for i, row in enumerate(res.matrix) for j, s in enumerate(row)]
        text = similarity_text(res.similarity, combine, res.matrix)
        return {"ui": {"text": [text]}, "result": (res.similarity, text, to_json(pairs))}


def rank_table(rows: list) -> str:
    lines = ["images ranked by similarity to the reference (DINOv2 cosine)"]
    for r in rows:
        lines.append(f"  #{r['rank'] + 1}: image {r['index']}  sim {r['similarity']:+.4f}")
    return "\n".join(lines)


class VisionKitRankSimilarImages:
    DESCRIPTION = ("Ranks a batch of images by how alike each is to a reference image (cosine of DINOv2 "
                   "embeddings): the images sorted most similar first (optionally only the top k), the best one's "
                   "index and similarity, and every score as JSON. The ranking shows on the node.")
    CATEGORY = f"{CATEGORY}/perception"
    FUNCTION = "rank"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("sorted_images", "best_index", "best_similarity", "scores_json")
    OUTPUT_TOOLTIPS = (
        "The images sorted by similarity to the reference, best first (only the top k when top_k > 0).",
        "Index (in the input batch, from 0) of the image most like the reference.",
        "Its cosine similarity to the reference (-1..1).",
        "Every image, best first: [{\"rank\", \"index\", \"similarity\"}, …].",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "similarity_model": (SIMILARITY_MODEL_TYPE, {"tooltip": MODEL_TIP}),
                "reference": ("IMAGE", {"tooltip": "What to look for (several images: their mean embedding)."}),
                "images": ("IMAGE", {"tooltip": "The batch of images to rank (e.g. several Load Image nodes joined "
                                                "with Batch Images)."}),
                "pooling": (list(POOLING), {"default": "cls", "tooltip": POOLING_TIP}),
            },
            "optional": {
                "top_k": ("INT", {"default": 0, "min": 0, "max": 4096,
                                  "tooltip": "Keep only the k best images in sorted_images (0 = all of them)."}),
            },
        }

    def rank(self, similarity_model, reference, images, pooling="cls", top_k: int = 0):
        import torch

        res = rank(similarity_model, reference, images, pooling)
        order = res.order if int(top_k) <= 0 else res.order[:int(top_k)]
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        sorted_images = batch.index_select(0, torch.tensor(order, dtype=torch.long, device=batch.device))
        best = res.order[0]
        return {"ui": {"text": [rank_table(res.rows)]},
                "result": (sorted_images, int(best), float(res.similarity[best]), to_json(res.rows))}
