"""Tiny InstantID files for the tiny SDXL pipeline (diffusers/tiny-sdxl, checkpoints/tiny-sdxl.safetensors).

- instantid/tiny-instantid.bin: InstantX's ip-adapter.bin format, torch.save of {"image_proj": Resampler
  weights in the ORIGINAL IP-Adapter names (latents, proj_in, layers.i.0.{norm1,norm2,to_q,to_kv,to_out},
  layers.i.1.{0,1,3}, proj_out, norm_out), "ip_adapter": {"<n>.to_k_ip.weight", "<n>.to_v_ip.weight"}} where
  n is the index of each cross-attention processor in the UNet's attn_processors order (1, 3, 5 ...: the
  self-attention processors take the even numbers), as InstantID's set_ip_adapter saves them;
- instantid/tiny-instantid.safetensors: the same tensors with "image_proj." / "ip_adapter." prefixes;
- controlnet/tiny-sdxl-identitynet/: a diffusers ControlNetModel folder shaped for the tiny SDXL UNet
  (the IdentityNet's role: its cross-attention takes the Resampler's tokens, as wide as the UNet's).

Resampler sizes: width 64, depth 4 (diffusers' own IP-Adapter Plus conversion, the tests' reference,
assumes 4 layers and 64-wide heads), 2 heads of 64, 4 queries, feed-forward ×4, input = the tiny face
model's embedding size, output = the tiny SDXL UNet's cross-attention width (40). The weights are written
here by name and shape, independently of the pack's loader.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from .tiny_models import _save_safetensors, builder

SEED = 2024


def embedding_dim() -> int:
    """The tiny face model's embedding size (its fixture's, when there is one), else ArcFace's 512."""
    try:
        from . import tiny_faces
    except ImportError:
        return 512
    for name in ("EMBEDDING_DIM", "EMBED_DIM", "EMB_DIM"):
        if hasattr(tiny_faces, name):
            return int(getattr(tiny_faces, name))
    import inspect

    try:  # the recogniser writer's default width
        return int(inspect.signature(tiny_faces.write_recogniser).parameters["dim"].default)
    except (AttributeError, KeyError, TypeError, ValueError):
        return 512


@functools.cache
def tiny_sdxl_unet():
    """A UNet shaped like diffusers/tiny-sdxl (weights irrelevant: only names and shapes are used)."""
    from diffusers import UNet2DConditionModel

    from .tiny_sd import SDXL, shipped

    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(shipped("sdxl", "unet", in_channels=4, **SDXL["unet"])).eval()


def resampler_weights(emb_dim: int, out_dim: int, dim: int = 64, depth: int = 4, heads: int = 2, dim_head: int = 64,
                      queries: int = 4, ff_mult: int = 4, seed: int = SEED) -> dict:
    """Resampler weights in the original IP-Adapter / InstantID names."""
    g = torch.Generator().manual_seed(seed)

    def lin(o, i, scale=1.0):
        return torch.randn(o, i, generator=g) * (scale / i ** 0.5)

    def vec(n, base=0.0, std=0.1):
        return base + torch.randn(n, generator=g) * std

    inner = heads * dim_head
    sd = {"latents": torch.randn(1, queries, dim, generator=g) / dim ** 0.5,
          "proj_in.weight": lin(dim, emb_dim), "proj_in.bias": vec(dim),
          "proj_out.weight": lin(out_dim, dim), "proj_out.bias": vec(out_dim),
          "norm_out.weight": vec(out_dim, 1.0), "norm_out.bias": vec(out_dim)}
    for i in range(depth):
        a, f = f"layers.{i}.0.", f"layers.{i}.1."
        sd.update({a + "norm1.weight": vec(dim, 1.0), a + "norm1.bias": vec(dim),
                   a + "norm2.weight": vec(dim, 1.0), a + "norm2.bias": vec(dim),
                   a + "to_q.weight": lin(inner, dim, 2.0), a + "to_kv.weight": lin(2 * inner, dim, 2.0),
                   a + "to_out.weight": lin(dim, inner),
                   f + "0.weight": vec(dim, 1.0), f + "0.bias": vec(dim),
                   f + "1.weight": lin(dim * ff_mult, dim), f + "3.weight": lin(dim, dim * ff_mult)})
    return sd


def ip_attention_weights(unet, seed: int = SEED + 1, scale: float = 3.0) -> dict:
    """{"<n>.to_k_ip.weight", "<n>.to_v_ip.weight"} for every cross-attention processor n of `unet`."""
    g = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    sd = {}
    for n, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        hidden = unet.get_submodule(name[: -len(".processor")]).to_k.out_features
        for kv in ("k", "v"):
            sd[f"{n}.to_{kv}_ip.weight"] = torch.randn(hidden, cross, generator=g) * (scale / cross ** 0.5)
    return sd


def adapter_state_dict(emb_dim: int | None = None, **resampler_kw) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} for the tiny SDXL UNet (what ip-adapter.bin holds)."""
    unet = tiny_sdxl_unet()
    emb_dim = emb_dim or embedding_dim()
    return {"image_proj": resampler_weights(emb_dim, int(unet.config.cross_attention_dim), **resampler_kw),
            "ip_adapter": ip_attention_weights(unet)}


def save_adapter(sd: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        _save_safetensors({f"{g}.{k}": v for g, part in sd.items() for k, v in part.items()}, path)
    else:
        torch.save(sd, path)


def identitynet(seed: int = 31):
    from .tiny_sd_extras import tiny_controlnet

    return tiny_controlnet("sdxl", seed, tiny_sdxl_unet())


@builder
def instantid(root: Path) -> None:
    sd = adapter_state_dict()
    save_adapter(sd, root / "instantid" / "tiny-instantid.bin")
    save_adapter(sd, root / "instantid" / "tiny-instantid.safetensors")
    identitynet().save_pretrained(str(root / "controlnet" / "tiny-sdxl-identitynet"), safe_serialization=True)
