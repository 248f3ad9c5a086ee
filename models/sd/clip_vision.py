"""CLIP vision encoders for IP-Adapter (the `clip_vision` folder): transformers CLIPVisionModelWithProjection.

Accepted, offline:
- a single .safetensors / .bin in transformers' key layout, `vision_model.*` + `visual_projection.weight`, as
  h94/IP-Adapter ships `models/image_encoder/model.safetensors` (ViT-H/14) and `sdxl_models/image_encoder`
  (ViT-bigG/14), and as ComfyUI's `CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors` is named. A full CLIPModel file
  (text tower too) works as well: its vision part is used.
- a transformers folder with config.json (a CLIPVisionConfig, or a CLIPConfig whose vision_config is used) and
  model.safetensors / pytorch_model.bin.

A single file's configuration is read from the tensor shapes: hidden size (class embedding), layers, MLP width
(fc1), patch size (patch embedding kernel), image size (patch × √(positions − 1)), projection dim
(visual_projection). What shapes cannot tell follows the standard CLIP ViTs: the head width open_clip's shipped
model configs give for that width (perception/clip_files: ViT-B 768 and ViT-L 1024 → 64-wide heads (12, 16 heads); ViT-H
1280 → 80 (16 heads); ViT-bigG 1664 → 104 (16 heads); any other width → 64, i.e. heads = hidden / 64 — NOT
right for ViT-H / bigG, whose heads are wider), layer-norm eps 1e-5, and the activation: OpenAI's ViT-B (768 wide)
and ViT-L (1024 wide, patch 14) use quick_gelu, the LAION/OpenCLIP ones (ViT-H 1280, ViT-bigG 1664) gelu.
A `<file stem>.json` CLIPVisionConfig beside the file overrides all of it.
"""
from __future__ import annotations

import json
import math
import os
import re

import torch

from ..core import identify
from ..core.cache import Loaded, ModelSpec
from ..core.weights import WeightsError, load_state_dict
from .pipeline import torch_dtype
from .types import GenerationError

KIND = "clip_vision"
ENCODER_NAMES = {1024: "ViT-L/14", 1280: "ViT-H/14", 1664: "ViT-bigG/14", 768: "ViT-B"}  # by hidden width
PROJECTION_NAMES = {768: "ViT-L/14", 1024: "ViT-H/14", 1280: "ViT-bigG/14", 512: "ViT-B"}  # by projection width


class ClipVisionError(GenerationError):
    """A file that is not a usable CLIP vision encoder; the message says what it looks like."""


def _what_else(sd: dict) -> str:
    return "it looks like " + identify.what_is(sd, exclude="clip_vision") if sd else "it holds no tensors"


def _vision_part(sd: dict, name: str) -> dict:
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    for p in ("model.", "clip_vision_model.", "module."):  # wrapper prefixes some exports add
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    vis = {k: v for k, v in sd.items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    if "vision_model.embeddings.class_embedding" not in vis:
        if any(k.startswith("visual.") for k in sd):
            raise ClipVisionError(f"{name} is an open_clip checkpoint (visual.*); IP-Adapter needs the transformers "
                                  "layout (vision_model.*), e.g. h94/IP-Adapter's "
                                  "models/image_encoder/model.safetensors")
        if any(k.startswith(("image_proj.", "ip_adapter.")) for k in sd):
            raise ClipVisionError(f"{name} is IP-Adapter weights, not a CLIP vision encoder: choose it as the "
                                  "IP-Adapter file and a CLIP vision encoder (models/clip_vision) beside it")
        raise ClipVisionError(f"{name} is not a CLIP vision encoder: {_what_else(sd)}. Put a CLIP vision "
                              "encoder (e.g. CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors) in models/clip_vision.")
    if "visual_projection.weight" not in vis:
        raise ClipVisionError(f"{name} is a CLIP vision model without its projection (visual_projection.weight); "
                              "IP-Adapter needs CLIPVisionModelWithProjection weights (h94's image_encoder)")
    return vis


def config_from_state_dict(sd: dict) -> dict:
    """CLIPVisionConfig arguments read from a transformers-layout vision state dict (see the module docstring)."""
    from ..perception.clip_files import vision_head_width

    hidden = int(sd["vision_model.embeddings.class_embedding"].shape[0])
    patch = int(sd["vision_model.embeddings.patch_embedding.weight"].shape[-1])
    positions = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
    side = math.isqrt(positions - 1)
    layers = len({m.group(1) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))})
    quick = (hidden == 768) or (hidden == 1024 and patch == 14)
    return dict(hidden_size=hidden, intermediate_size=int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                num_hidden_layers=layers, num_attention_heads=max(1, hidden // vision_head_width(hidden)),
                patch_size=patch,
                image_size=side * patch, projection_dim=int(sd["visual_projection.weight"].shape[0]),
                hidden_act="quick_gelu" if quick else "gelu", layer_norm_eps=1e-5, num_channels=3)


_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors")


def read_clip_vision(path: str) -> tuple[dict, dict, str]:
    """(CLIPVisionConfig kwargs, vision state dict, source) of a file or transformers folder."""
    name = os.path.basename(path.rstrip(os.sep))
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
                cfg = json.load(f)
            cfg = cfg.get("vision_config", cfg)
            weights = next((os.path.join(path, w) for w in _FOLDER_WEIGHTS if os.path.isfile(os.path.join(path, w))),
                           None)
            if weights is None:
                raise ClipVisionError(f"{name} has a config.json but no {' or '.join(_FOLDER_WEIGHTS[:2])}")
            sd = _vision_part(load_state_dict(weights), name)
            keep = set(config_from_state_dict(sd)) | {"attention_dropout", "initializer_range", "initializer_factor"}
            return {k: v for k, v in cfg.items() if k in keep}, sd, "transformers folder"
        sd = _vision_part(load_state_dict(path), name)
    except WeightsError as ex:
        raise ClipVisionError(str(ex)) from ex
    except (OSError, ValueError) as ex:
        if isinstance(ex, ClipVisionError):
            raise
        raise ClipVisionError(f"{name}: cannot read its config.json ({ex})") from ex
    cfg = config_from_state_dict(sd)
    side = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(side):
        try:
            with open(side, encoding="utf-8") as f:
                extra = json.load(f)
        except (OSError, ValueError) as ex:
            raise ClipVisionError(f"{name}: the config beside it is not valid JSON ({ex})") from ex
        cfg.update({k: v for k, v in extra.get("vision_config", extra).items() if k in cfg})
    return cfg, sd, "single file"


def build_clip_vision(cfg: dict, sd: dict, name: str = "CLIP vision"):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as ex:
        raise ClipVisionError(f"{name}: the weights do not fit the CLIP vision layout read from them "
                              f"({str(ex).splitlines()[0][:200]})") from ex
    for mod in model.modules():  # buffers not in the file (position ids) are made on the CPU
        for bname, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                if bname == "position_ids":
                    mod.register_buffer(bname, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
                else:
                    raise ClipVisionError(f"{name}: no weights for {bname}")
    return model.eval()


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path.rstrip(os.sep))
    cfg, sd, source = read_clip_vision(spec.path)
    model = build_clip_vision(cfg, sd, name).requires_grad_(False)
    model.to(device=device, dtype=torch_dtype(spec.dtype, device))
    c = model.config
    return Loaded(model, meta={"source": source, "hidden": c.hidden_size, "projection": c.projection_dim,
                               "image_size": c.image_size, "encoder": encoder_name(c.hidden_size)})


def encoder_name(hidden: int) -> str:
    return ENCODER_NAMES.get(int(hidden), f"a {hidden}-wide CLIP ViT")


def clip_vision_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=KIND, path=path, build=_build, dtype=dtype)


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if identify.has_prefix(keys, "vision_model.", "visual.") or "visual_projection.weight" in sd:
        return f"a CLIP vision encoder (image tower only, as IP-Adapter uses): {identify.goes('clip_vision')}"
    return None


identify.register("clip_vision", _what_file, order=110,
                  place=identify.Place("clip_vision", "VisionKitIPAdapterLoader", " as its CLIP vision encoder"))
