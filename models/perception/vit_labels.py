"""Image labels with a ViT classifier (transformers' `ViTForImageClassification`), through the shared cache.

A model in the `vit` folder is a transformers folder as google/vit-base-patch16-224 has it: config.json
(model_type "vit", with its id2label names: the 1000 ImageNet classes there), model.safetensors /
pytorch_model.bin and preprocessor_config.json (the processor's defaults when it is missing).

The probabilities are the library's: the image processor's pixels through the model, softmax over the
logits (what `pipeline("image-classification")` does for a single-label model), the top k labels with
their probabilities, highest first (ties in index order).
"""
from __future__ import annotations

import os

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

LABELS_MODEL_TYPE = "VK_LABELS_MODEL"  # the ComfyUI socket type of a loaded ViT labels model

MAX_TOP_K = 1000
NEEDS = "config.json (with id2label), model.safetensors and preprocessor_config.json"


class LabelsError(VisionModelError):
    """A labelling request that cannot run (bad settings, wrong model folder)."""


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401
    from transformers import ViTForImageClassification, ViTImageProcessor

    path = spec.path
    cfg = read_model_config(path, ("vit",), "a ViT image-classification folder", NEEDS)
    archs = cfg.get("architectures") or []
    if archs and "ViTForImageClassification" not in archs:
        raise LabelsError(f"{os.path.basename(path)} is a ViT {', '.join(archs)}, not an image classifier (it has no "
                          "label head); use e.g. google/vit-base-patch16-224")
    model = from_pretrained(ViTForImageClassification, path, VisionModelError, "the ViT classifier")
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        processor = from_pretrained(ViTImageProcessor, path, VisionModelError, "the ViT image processor")
    else:
        processor = ViTImageProcessor(size={"height": int(model.config.image_size),
                                            "width": int(model.config.image_size)})
    dtype = finish(model, spec, device)
    info = {"format": "transformers folder", "labels": int(model.config.num_labels), "dtype": dtype}
    return Loaded(VisionBundle(model, processor, info), meta=info)


def labels_spec(path: str, dtype: str = "auto") -> ModelSpec:
    check_dtype(dtype)
    return ModelSpec(kind="vit", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_labels_model(path: str, dtype: str = "auto"):
    spec = labels_spec(path, dtype)
    return spec, get_cache().load(spec)


def check_top_k(top_k) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not (1 <= top_k <= MAX_TOP_K):
        raise LabelsError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")


def classify(spec: ModelSpec, image, top_k: int = 5, progress=None) -> list[dict]:
    """Per image: {"image", "best", "probability", "labels": [{"label", "probability", "index"}]} (top k)."""
    import torch

    from ..core import host

    check_top_k(top_k)
    images = pil_images(image)
    out = []
    with get_cache().use(spec) as bundle:
        device, dtype = bundle.device_dtype()
        names = bundle.model.config.id2label
        k = min(int(top_k), int(bundle.model.config.num_labels))
        bar = host.Progress(len(images), progress)
        for i, pil in enumerate(images):
            host.throw_if_cancelled()
            inputs = move_inputs(bundle.processor(images=pil, return_tensors="pt"), device, dtype)
            with torch.inference_mode():
                logits = bundle.model(pixel_values=inputs["pixel_values"]).logits[0]
            probs = logits.float().softmax(-1).cpu()
            top = torch.topk(probs, k)
            labels = [{"label": str(names.get(int(j), names.get(str(int(j)), f"LABEL_{int(j)}"))),
                       "probability": float(p), "index": int(j)} for p, j in zip(top.values, top.indices)]
            out.append({"image": i, "best": labels[0]["label"], "probability": labels[0]["probability"],
                        "labels": labels})
            bar.update(1)
    return out
