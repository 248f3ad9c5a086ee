"""Tiny IP-Adapters and CLIP vision encoders in h94/IP-Adapter's real formats, for the pipelines of tiny_sd.py.

Written twice: for the pack (models_root/ipadapter/*, models_root/clip_vision/*) and in h94's repository layout
for diffusers' `load_ip_adapter` (models_root/vk_extras/h94/models/ip-adapter_sd15.safetensors +
models/image_encoder/{config.json, model.safetensors}, and sdxl_models/... for SDXL).

- CLIP vision: transformers CLIPVisionModelWithProjection, 64 wide (one 64-wide head, so the single-file
  rule heads = hidden / 64 holds), 2 layers, 32-px images with 8-px patches (17 tokens), 24-wide projection,
  gelu (as h94's ViT-H config). clip_vision/tiny-clip-vision.safetensors (single file) and
  clip_vision/tiny-clip-vision-folder/ (the same weights as a transformers folder). A second, 96-wide encoder
  (tiny-clip-vision-wide.safetensors) for the "wrong encoder" message.
- IP-Adapters for tiny-sd15 (16-wide cross-attention) and tiny-sdxl (40 wide): base (4 tokens from the
  projection), plus (a 4-layer Resampler with 8 queries, the original key layout with to_kv), plus-face (the
  same with other weights), full-face (MLP over the hidden states), and the SD1.5 base again as a .bin
  ({"image_proj": ..., "ip_adapter": ...}). Their to_k_ip/to_v_ip are numbered over the UNet's attention
  processors as the originals are (1, 3, 5, ...). Weights are fp16, as h94's files.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from .tiny_models import _save_safetensors, builder

ENC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, image_size=32,
           patch_size=8, projection_dim=24, hidden_act="gelu", layer_norm_eps=1e-5)
ENC_WIDE = dict(ENC, hidden_size=96, intermediate_size=128, projection_dim=40)
ADAPTERS = {  # file stem: (arch, kind, seed)
    "tiny-ip-adapter_sd15": ("sd15", "base", 101),
    "tiny-ip-adapter-plus_sd15": ("sd15", "plus", 102),
    "tiny-ip-adapter-plus-face_sd15": ("sd15", "plus", 103),
    "tiny-ip-adapter-full-face_sd15": ("sd15", "full", 104),
    "tiny-ip-adapter_sdxl": ("sdxl", "base", 105),
    "tiny-ip-adapter-plus_sdxl": ("sdxl", "plus", 106),
}


def tiny_encoder(cfg: dict = ENC, seed: int = 90):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
            p.copy_(p.half().float())  # what an fp16 file holds, so the folder and the file agree exactly
    return model


@functools.cache
def _unet_layout(arch: str) -> tuple:
    """(processor name, width) of each cross-attention layer of the tiny pipeline's UNet, in order."""
    from diffusers import UNet2DConditionModel

    from .tiny_sd import SD15, SDXL, shipped

    spec = SD15 if arch == "sd15" else SDXL
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(shipped(arch, "unet", **spec["unet"]))
    out = []
    for name in unet.attn_processors:
        if not name.endswith("attn1.processor"):
            out.append((name, int(unet.get_submodule(name[: -len(".processor")]).to_k.out_features)))
    return tuple(out), int(unet.config.cross_attention_dim)


def _rand(g, *shape, std=0.3):
    return (torch.randn(*shape, generator=g) * std).half()


def tiny_ipadapter(arch: str, kind: str, seed: int, enc: dict = ENC) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} in the original (h94) key layout."""
    g = torch.Generator().manual_seed(seed)
    layers, cross = _unet_layout(arch)
    ip = {}
    for i, (_, width) in enumerate(layers):
        ip[f"{2 * i + 1}.to_k_ip.weight"] = _rand(g, width, cross)
        ip[f"{2 * i + 1}.to_v_ip.weight"] = _rand(g, width, cross)
    hidden, projection = enc["hidden_size"], enc["projection_dim"]
    if kind == "base":
        proj = {"proj.weight": _rand(g, 4 * cross, projection, std=0.2), "proj.bias": _rand(g, 4 * cross, std=0.1),
                "norm.weight": (1 + _rand(g, cross, std=0.1).float()).half(), "norm.bias": _rand(g, cross, std=0.1)}
    elif kind == "full":
        proj = {"proj.0.weight": _rand(g, hidden, hidden, std=0.1), "proj.0.bias": _rand(g, hidden, std=0.1),
                "proj.2.weight": _rand(g, cross, hidden, std=0.1), "proj.2.bias": _rand(g, cross, std=0.1),
                "proj.3.weight": (1 + _rand(g, cross, std=0.1).float()).half(), "proj.3.bias": _rand(g, cross, std=0.1)}
    else:  # plus: the original Resampler (depth 4, 64-wide heads, ffn ×4), 8 queries of 32 dims
        dims, queries, inner = 32, 8, 64
        proj = {"latents": _rand(g, 1, queries, dims, std=0.2), "proj_in.weight": _rand(g, dims, hidden, std=0.1),
                "proj_in.bias": _rand(g, dims, std=0.1), "proj_out.weight": _rand(g, cross, dims, std=0.1),
                "proj_out.bias": _rand(g, cross, std=0.1), "norm_out.bias": _rand(g, cross, std=0.1),
                "norm_out.weight": (1 + _rand(g, cross, std=0.1).float()).half()}
        for i in range(4):
            p = f"layers.{i}."
            for norm in ("0.norm1", "0.norm2", "1.0"):
                proj[p + norm + ".weight"] = (1 + _rand(g, dims, std=0.1).float()).half()
                proj[p + norm + ".bias"] = _rand(g, dims, std=0.1)
            proj[p + "0.to_q.weight"] = _rand(g, inner, dims, std=0.1)
            proj[p + "0.to_kv.weight"] = _rand(g, 2 * inner, dims, std=0.1)
            proj[p + "0.to_out.weight"] = _rand(g, dims, inner, std=0.1)
            proj[p + "1.1.weight"] = _rand(g, 4 * dims, dims, std=0.1)
            proj[p + "1.3.weight"] = _rand(g, dims, 4 * dims, std=0.1)
    return {"image_proj": proj, "ip_adapter": ip}


def flat(sd: dict) -> dict:
    return {f"{part}.{k}": v for part, d in sd.items() for k, v in d.items()}


def save_encoder(model, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(str(folder), safe_serialization=True)
    model.float()
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("dtype", None), cfg.pop("torch_dtype", None)  # diffusers / the pack choose the dtype
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))


@builder
def ipadapters(root: Path) -> None:
    enc = tiny_encoder()
    h94 = root / "vk_extras" / "h94"
    for sub in ("models", "sdxl_models"):
        save_encoder(enc, h94 / sub / "image_encoder")
    save_encoder(enc, root / "clip_vision" / "tiny-clip-vision-folder")
    single = {k: v.half() for k, v in enc.state_dict().items()}
    _save_safetensors(single, root / "clip_vision" / "tiny-clip-vision.safetensors")
    wide = tiny_encoder(ENC_WIDE, seed=91)
    _save_safetensors({k: v.half() for k, v in wide.state_dict().items()},
                      root / "clip_vision" / "tiny-clip-vision-wide.safetensors")
    for stem, (arch, kind, seed) in ADAPTERS.items():
        sd = tiny_ipadapter(arch, kind, seed)
        _save_safetensors(flat(sd), root / "ipadapter" / f"{stem}.safetensors")
        sub = "models" if arch == "sd15" else "sdxl_models"
        _save_safetensors(flat(sd), h94 / sub / f"{stem.removeprefix('tiny-')}.safetensors")
    torch.save(tiny_ipadapter("sd15", "base", 101), root / "ipadapter" / "tiny-ip-adapter_sd15.bin")
