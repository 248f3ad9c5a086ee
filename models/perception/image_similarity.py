"""Whole-image similarity with DINOv2 (transformers' `Dinov2Model`), through the shared cache.

A model in the `dinov2` folder is a transformers folder as facebook/dinov2-small / -base / -large have
it: config.json (model_type "dinov2", or "dinov2_with_registers"), model.safetensors and
preprocessor_config.json (resize the shortest side to 256, centre crop 224, ImageNet mean/std; the
processor's defaults when the file is missing).

The embedding of an image is the library's: the image processor's pixels through the model, then
`pooler_output` (the layer-normed CLS token, pooling "cls") or the mean of the layer-normed patch
tokens (pooling "mean patch"). Similarity is the cosine of two embeddings (-1..1; near-duplicates
score above ~0.9, unrelated photos around 0–0.3 with the base model).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.cache import Loaded, ModelSpec, get_cache
from .hf_folder import (
    VisionBundle,
    VisionModelError,
    check_dtype,
    finish,
    from_pretrained,
    move_inputs,
    pil_images,
    read_model_config,
)

SIMILARITY_MODEL_TYPE = "VK_SIMILARITY_MODEL"  # the ComfyUI socket type of a loaded DINOv2 similarity model

POOLING = ("cls", "mean patch")
COMBINE = ("mean", "max", "min")
NEEDS = "config.json, model.safetensors and preprocessor_config.json"


class SimilarityError(VisionModelError):
    """A similarity request that cannot run (bad settings, wrong model folder)."""


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401
    from transformers import AutoModel, BitImageProcessor

    path = spec.path
    cfg = read_model_config(path, ("dinov2", "dinov2_with_registers"), "a DINOv2 folder", NEEDS)
    model = from_pretrained(AutoModel, path, VisionModelError, "the DINOv2 model")
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        from transformers import AutoImageProcessor

        processor = from_pretrained(AutoImageProcessor, path, VisionModelError, "the DINOv2 image processor")
    else:  # the settings facebook/dinov2-* ship
        processor = BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                      do_center_crop=True, image_mean=[0.485, 0.456, 0.406],
                                      image_std=[0.229, 0.224, 0.225], do_convert_rgb=True)
    dtype = finish(model, spec, device)
    width = int(cfg.get("hidden_size", 0))
    variant = {384: "DINOv2 small", 768: "DINOv2 base", 1024: "DINOv2 large", 1536: "DINOv2 giant"}.get(
        width, f"DINOv2 ({width} wide)")
    info = {"format": "transformers folder", "variant": variant, "dtype": dtype}
    return Loaded(VisionBundle(model, processor, info), meta=info)


def similarity_spec(path: str, dtype: str = "auto") -> ModelSpec:
    check_dtype(dtype)
    return ModelSpec(kind="dinov2", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_similarity_model(path: str, dtype: str = "auto"):
    spec = similarity_spec(path, dtype)
    return spec, get_cache().load(spec)


def check_pooling(pooling: str) -> None:
    if pooling not in POOLING:
        raise SimilarityError(f"pooling {pooling!r} is not one of {', '.join(POOLING)}")


def embed(spec: ModelSpec, image, pooling: str = "cls", progress=None):
    """L2-normalised float32 embeddings (B, D) of an IMAGE batch, image by image."""
    import torch

    from ..core import host

    check_pooling(pooling)
    images = pil_images(image)
    rows = []
    with get_cache().use(spec) as bundle:
        device, dtype = bundle.device_dtype()
        n_reg = int(getattr(bundle.model.config, "num_register_tokens", 0) or 0)
        bar = host.Progress(len(images), progress)
        for pil in images:
            host.throw_if_cancelled()
            inputs = move_inputs(bundle.processor(images=pil, return_tensors="pt"), device, dtype)
            with torch.inference_mode():
                out = bundle.model(pixel_values=inputs["pixel_values"])
            f = out.pooler_output if pooling == "cls" else out.last_hidden_state[:, 1 + n_reg:].mean(dim=1)
            rows.append(f.float().cpu())
            bar.update(1)
    f = torch.cat(rows)
    return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class PairResult:
    similarity: float  # the combined value
    matrix: list  # [[cos(a_i, b_j)]]


def compare(spec: ModelSpec, image_a, image_b, pooling: str = "cls", combine: str = "mean") -> PairResult:
    """Cosine similarity of every image of a with every image of b, combined by mean / max / min."""
    if combine not in COMBINE:
        raise SimilarityError(f"combine {combine!r} is not one of {', '.join(COMBINE)}")
    fa, fb = embed(spec, image_a, pooling), embed(spec, image_b, pooling)
    m = fa @ fb.T
    value = {"mean": m.mean, "max": m.max, "min": m.min}[combine]()
    return PairResult(float(value), [[round(float(x), 6) for x in row] for row in m])


@dataclass
class RankResult:
    order: list  # image indexes, most similar first
    similarity: list  # per input image
    rows: list  # [{"rank", "index", "similarity"}] best first


def rank(spec: ModelSpec, reference, images, pooling: str = "cls") -> RankResult:
    """The images sorted by cosine similarity to the reference (several reference images: their mean embedding)."""
    import torch

    ref = embed(spec, reference, pooling)
    ref = ref.mean(dim=0, keepdim=True)
    ref = ref / ref.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    feats = embed(spec, images, pooling)
    sims = (feats @ ref.T)[:, 0]
    order = torch.argsort(sims, descending=True, stable=True).tolist()
    rows = [{"rank": r, "index": i, "similarity": round(float(sims[i]), 6)} for r, i in enumerate(order)]
    return RankResult(order, [float(s) for s in sims], rows)
