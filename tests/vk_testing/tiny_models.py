"""Tiny random-weight models in the real file formats, written into a models root.

Each builder writes what a user's file would be (same container format, same key names) but with
tiny shapes, so the real loading code runs in seconds on CPU. Random weights are seeded: every run
writes the same files. `build_all(root)` writes everything, in the folders of models/core/folders.py
(one function per model, registered in BUILDERS).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from . import import_pack

import_pack()

BUILDERS: dict[str, Callable[[Path], None]] = {}


def builder(fn):
    BUILDERS[fn.__name__] = fn
    return fn


def _seeded(seed: int):
    torch.manual_seed(seed)


def _save_pth(sd: dict, path: Path, wrap: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrap: sd} if wrap else sd, path)


def _save_safetensors(sd: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def _perturb(net, std: float = 0.02) -> None:
    """Default inits leave some layers at zero (RRDB's scaled init); make every weight matter."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * std)


# (upscale models: tiny_upscale.py)


# ---------------------------------------------------------------- SAM
def tiny_sam(seed: int = 0, embed_dim: int = 32, depth: int = 2, heads: int = 2, global_attn=(1,)):
    """A segment-anything Sam with a tiny ViT image encoder (real prompt encoder and mask decoder).

    Built with segment-anything's own classes and the same fixed parts its builders use (1024-px
    input, 16-px patches, 256-d prompts), only the encoder's width and depth are small.
    """
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    _seeded(seed)
    prompt_dim, image_size, patch = 256, 1024, 16
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(global_attn), window_size=14,
            out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048,
                                                               num_heads=8),
                                 transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    _perturb(sam, 0.01)
    return sam.eval()


@builder
def sams(root: Path) -> None:
    sd = tiny_sam().state_dict()
    _save_pth(sd, root / "sams" / "tiny_sam_vit.pth")
    _save_safetensors(sd, root / "sams" / "tiny_sam_vit.safetensors")


# ---------------------------------------------------------------- CLIP (transformers folder)
@builder
def clip_models(root: Path) -> None:
    """A tiny transformers CLIPModel folder (config.json + model.safetensors)."""
    from transformers import CLIPConfig, CLIPModel

    _seeded(4)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16)
    model = CLIPModel(cfg).eval()
    out = root / "clip_models" / "tiny-clip"
    model.save_pretrained(str(out), safe_serialization=True)


def _discover() -> None:
    """Each capability may keep its fixture builders in tests/vk_testing/tiny_<name>.py (using @builder)."""
    import importlib
    import pkgutil

    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if info.name.startswith("tiny_") and info.name != "tiny_models":
            importlib.import_module(f"{__package__}.{info.name}")


def build_all(root, only: list[str] | None = None) -> Path:
    _discover()
    root = Path(root)
    for name, fn in BUILDERS.items():
        if only is None or name in only:
            fn(root)
    for spec in ("checkpoints", "diffusers", "loras", "controlnet", "ipadapter", "clip_vision", "vae",
                 "grounding-dino", "insightface/models", "instantid"):
        os.makedirs(root / spec, exist_ok=True)
    return root
