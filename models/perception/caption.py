"""Image captions with BLIP (transformers' `BlipForConditionalGeneration`), through the shared cache.

A model in the `blip` folder is a transformers folder as Salesforce/blip-image-captioning-base (or
-large) has it: config.json (model_type "blip"), model.safetensors / pytorch_model.bin, the BERT
tokenizer files (vocab.txt or tokenizer.json, tokenizer_config.json) and preprocessor_config.json.

A caption is exactly what the library's own recipe gives:

    inputs = BlipProcessor(images=pil_image, text=prefix or None, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=..., num_beams=..., do_sample=False)
    caption = processor.decode(ids[0], skip_special_tokens=True)

A prefix makes it a conditional caption ("a photography of" → "a photography of a lion in the grass");
the result starts with the prefix, as BLIP writes it (lower case). Images of a batch are captioned one
by one, so each caption is the one that image gets alone (beam search over a padded batch can differ).
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
    require_files,
)

CAPTION_MODEL_TYPE = "VK_CAPTION_MODEL"  # the ComfyUI socket type of a loaded BLIP caption model

MAX_TOKENS = 512
MAX_BEAMS = 16
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
NEEDS = "config.json, model.safetensors, vocab.txt / tokenizer.json, tokenizer_config.json, preprocessor_config.json"


class CaptionError(VisionModelError):
    """A caption request that cannot run (bad settings, wrong model folder)."""


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401  (transformers needs it; imported here so the pack import stays cheap)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    path = spec.path
    cfg = read_model_config(path, ("blip",), "a BLIP captioning folder", NEEDS)
    archs = cfg.get("architectures") or []
    if archs and "BlipForConditionalGeneration" not in archs:
        raise CaptionError(f"{os.path.basename(path)} is a BLIP model for {', '.join(archs)}, not for captions; use "
                           "Salesforce/blip-image-captioning-base or -large")
    require_files(path, [TOKENIZER_FILES, ("preprocessor_config.json", "processor_config.json")],
                  "the BLIP folder")
    model = from_pretrained(BlipForConditionalGeneration, path, VisionModelError, "the BLIP captioning model")
    processor = from_pretrained(BlipProcessor, path, VisionModelError,
                                "the BLIP processor (tokenizer, image settings)")
    dtype = finish(model, spec, device)
    info = {"format": "transformers folder", "variant": _variant(model.config), "dtype": dtype}
    return Loaded(VisionBundle(model, processor, info), meta=info)


def _variant(config) -> str:
    v = config.vision_config
    return {768: "BLIP base", 1024: "BLIP large"}.get(int(v.hidden_size), f"BLIP ({v.hidden_size} wide)")


def caption_spec(path: str, dtype: str = "auto") -> ModelSpec:
    check_dtype(dtype)
    return ModelSpec(kind="blip", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_caption_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    spec = caption_spec(path, dtype)
    return spec, get_cache().load(spec)


def check_settings(max_tokens, num_beams) -> None:
    for name, v, hi in (("max_tokens", max_tokens, MAX_TOKENS), ("num_beams", num_beams, MAX_BEAMS)):
        if not isinstance(v, int) or isinstance(v, bool) or not (1 <= v <= hi):
            raise CaptionError(f"{name} must be a whole number from 1 to {hi}, got {v!r}"
                               + ("; 1 = greedy decoding, 3–5 = beam search" if name == "num_beams" else ""))


def generate_kwargs(max_tokens: int, num_beams: int) -> dict:
    """The generate() settings a caption uses (the tests call the library with the same)."""
    return {"max_new_tokens": int(max_tokens), "num_beams": int(num_beams), "do_sample": False}


def caption(spec: ModelSpec, image, prefix: str = "", max_tokens: int = 30, num_beams: int = 3,
            progress=None) -> list[str]:
    """One caption per image of an IMAGE batch (see the module docstring)."""
    import torch

    from ..core import host

    check_settings(max_tokens, num_beams)
    prefix = " ".join(str(prefix or "").split())
    images = pil_images(image)
    out: list[str] = []
    with get_cache().use(spec) as bundle:
        device, dtype = bundle.device_dtype()
        limit = int(bundle.model.config.text_config.max_position_embeddings)
        bar = host.Progress(len(images), progress)
        for pil in images:
            host.throw_if_cancelled()
            inputs = bundle.processor(images=pil, text=prefix or None, return_tensors="pt")
            n = int(inputs["input_ids"].shape[1]) if "input_ids" in inputs else 0
            if n + int(max_tokens) > limit:
                raise CaptionError(f"the prefix ({n} tokens) plus max_tokens ({max_tokens}) is more than this BLIP "
                                   f"model reads ({limit} tokens); shorten the prefix or lower max_tokens")
            with torch.inference_mode():
                ids = bundle.model.generate(**move_inputs(inputs, device, dtype),
                                            **generate_kwargs(max_tokens, num_beams))
            out.append(bundle.processor.decode(ids[0], skip_special_tokens=True).strip())
            bar.update(1)
    return out
