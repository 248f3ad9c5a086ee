"""SD1.5 / SDXL single-file checkpoints: what a file is, its diffusers configs, and LDM → diffusers keys.

- `detect(sd, name)`: the architecture from the weights (SDXL has `conditioner.embedders.1.*` and the UNet's
  `label_emb`; SD1.5 has `cond_stage_model.transformer.*` and 768-d cross-attention), inpainting from the
  UNet's 9 input channels; anything else gets a message saying what the file looks like.
- configs: the shipped config of the architecture (models/sd/configs/<arch>/…, the real SD1.5 / SDXL-base
  ones) overlaid with what the tensors' shapes say (channels, levels, layers, attention dims, text encoder
  width and depth), so real files get the shipped configs unchanged and smaller files (tests, pruned
  variants) get matching ones. Attention head counts are not in the weights: real widths keep the shipped
  values; other widths follow the convention (SD1.5 UNet 8 heads, SDXL UNet and CLIP text 64-wide heads).
- conversion: diffusers' own LDM → diffusers functions (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
  convert_open_clip_checkpoint) on the component's part of the state dict; CLIP-L keys only lose a prefix.
"""
from __future__ import annotations

import copy
import json
import os
import re
from functools import cache
from types import SimpleNamespace

from ..core import identify
from .types import ARCH_NAMES, GenerationError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD15_TEXT = "cond_stage_model.transformer."
SDXL_TEXT1 = "conditioner.embedders.0.transformer."
SDXL_TEXT2 = "conditioner.embedders.1.model."
SD2_TEXT = "cond_stage_model.model."
REFINER_TEXT = "conditioner.embedders.0.model."
WHERE = ("Put an SD1.5 or SDXL checkpoint (.safetensors) in models/checkpoints, or a diffusers pipeline folder "
         "(with model_index.json) in models/diffusers.")


class PipelineLoadError(GenerationError):
    """A pipeline file or folder VisionKit cannot load; the message says what it is and what to do."""


@cache
def _shipped(arch: str, part: str) -> str:
    name = "scheduler_config.json" if part == "scheduler" else ("model_index.json" if part == "" else "config.json")
    with open(os.path.join(CONFIG_DIR, arch, part, name), encoding="utf-8") as f:
        return f.read()


def shipped_config(arch: str, part: str) -> dict:
    """A fresh copy of the shipped config of `part` (unet, vae, text_encoder, text_encoder_2, scheduler, "")."""
    return json.loads(_shipped(arch, part))


# ================================================================ what is this file?
_has = identify.has_prefix  # any key starting with one of the prefixes (the registry's own helper)


def _cross_dim(sd: dict, prefix: str = UNET) -> int | None:
    for k, v in sd.items():
        if k.startswith(prefix) and k.endswith("attn2.to_k.weight"):
            return int(v.shape[1])
    return None


def unsupported_family(sd: dict, keys: list) -> str | None:
    """The diffusion family VisionKit does not run that the tensor names show (SD3, Flux, SD2, the SDXL refiner,
    AnimateDiff), in words, or None: one rule set for the loader and for identify."""
    if any("joint_blocks." in k for k in keys) or _has(keys, "text_encoders."):
        return "a Stable Diffusion 3 / 3.5 checkpoint (MMDiT)"
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.", "single_blocks.")) for k in keys):
        return "a Flux checkpoint"
    if _has(keys, SD2_TEXT) or _cross_dim(sd) == 1024:
        return "a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder, 1024-d cross-attention)"
    if _has(keys, REFINER_TEXT):
        return "an SDXL refiner checkpoint (OpenCLIP-bigG text encoder only)"
    if _has(keys, "down_blocks.", "model.diffusion_model.down_blocks.") and any("transformer_blocks" in k and
                                                                                "motion" in k for k in keys):
        return "an AnimateDiff motion module"
    return None


def describe_foreign(sd: dict, name: str) -> str:
    """Why a state dict is not an SD1.5 / SDXL checkpoint, with what it probably is."""
    keys = list(sd)
    unsupported = unsupported_family(sd, keys)
    if unsupported:
        return (f"{name} looks like {unsupported}, which is not supported: VisionKit runs SD1.5 and SDXL pipelines. "
                + WHERE)
    guess = None
    if not _has(keys, "model.diffusion_model.", "conditioner.embedders.", "cond_stage_model.") or not _has(keys, UNET):
        guess = identify.what_is(sd, exclude="checkpoint")
    else:
        missing = [what for what, p in (("a VAE (first_stage_model.*)", (VAE,)),
                                        ("a text encoder", (SD15_TEXT, SDXL_TEXT1, SDXL_TEXT2)))
                   if not _has(keys, *p)]
        guess = ("a Stable Diffusion UNet without " + " and ".join(missing or ["the parts SD1.5 / SDXL have"])
                 + ": use the full checkpoint, or its diffusers folder")
    return f"{name} is not an SD1.5 or SDXL checkpoint; it looks like {guess}. " + WHERE


def detect(sd: dict, name: str) -> tuple[str, bool]:
    """(arch, inpaint) of a single-file checkpoint, or a PipelineLoadError saying what the file is."""
    keys = list(sd)
    if not _has(keys, UNET + "input_blocks.") or not _has(keys, VAE):
        raise PipelineLoadError(describe_foreign(sd, name))
    if _has(keys, SDXL_TEXT2) or UNET + "label_emb.0.0.weight" in sd:
        arch = "sdxl"
        if not (_has(keys, SDXL_TEXT1) and _has(keys, SDXL_TEXT2)):
            raise PipelineLoadError(describe_foreign(sd, name))
    elif _has(keys, SD15_TEXT):
        arch = "sd15"
        cross = _cross_dim(sd)
        tok = next((v for k, v in sd.items() if k.startswith(SD15_TEXT) and k.endswith("token_embedding.weight")), None)
        width = int(tok.shape[1]) if tok is not None else None
        if cross == 1024:
            raise PipelineLoadError(describe_foreign(sd, name))
        if cross != width:
            raise PipelineLoadError(f"{name} has an SD1.5 layout but its UNet's cross-attention takes {cross}-d text "
                                    f"features while its CLIP text encoder gives {width} (SD1.5: 768 and 768); it is "
                                    "not a model VisionKit can run. " + WHERE)
    else:
        raise PipelineLoadError(describe_foreign(sd, name))
    inpaint = int(sd[UNET + "input_blocks.0.0.weight"].shape[1]) == 9
    return arch, inpaint


# ================================================================ configs from shapes
def _sub(sd: dict, prefix: str) -> dict:
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def unet_config(u: dict, arch: str, pooled_dim: int | None = None) -> dict:
    """UNet2DConditionModel config from an LDM UNet state dict (prefix removed)."""
    cfg = shipped_config(arch, "unet")
    keys = list(u)
    w_in = u["input_blocks.0.0.weight"]
    ids = _indices(keys, r"input_blocks\.(\d+)\.")
    downs = [i for i in ids if f"input_blocks.{i}.0.op.weight" in u]
    lpb = downs[0] - 1 if downs else len(ids) - 1
    levels = len(downs) + 1
    if lpb < 1 or len(ids) != levels * (lpb + 1):
        raise PipelineLoadError(f"the UNet has an unusual layout ({len(ids)} input blocks, downsamplers at {downs})")
    channels, attn, layers = [], [], []
    for b in range(levels):
        first = 1 + b * (lpb + 1)
        channels.append(int(u[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        n = len(_indices(keys, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\."))
        attn.append(n > 0)
        layers.append(max(n, 1))
    proj_in = next((v for k, v in u.items() if k.endswith(".proj_in.weight")), None)
    cross = _cross_dim(u, "")
    cfg.update(
        in_channels=int(w_in.shape[1]), out_channels=int(u["out.2.weight"].shape[0]), layers_per_block=lpb,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
    )
    if cross is not None:
        cfg["cross_attention_dim"] = cross
    if proj_in is not None and (proj_in.ndim == 2) != bool(cfg.get("use_linear_projection", False)):
        cfg["use_linear_projection"] = proj_in.ndim == 2
    if channels != cfg["block_out_channels"]:
        cfg["block_out_channels"] = channels
        cfg["attention_head_dim"] = ([max(1, c // 64) for c in channels] if arch == "sdxl" else
                                     (8 if all(c % 8 == 0 for c in channels) else 1))
    if layers != cfg.get("transformer_layers_per_block", [1] * levels):
        cfg["transformer_layers_per_block"] = layers
    mid = len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    if mid and mid != layers[-1]:
        raise PipelineLoadError(f"the UNet's middle block has {mid} transformer layers and its last level "
                                f"{layers[-1]}; diffusers' UNet needs them equal")
    time_dim = int(u["time_embed.0.weight"].shape[0])
    if time_dim != 4 * channels[0]:
        cfg["time_embedding_dim"] = time_dim
    if "label_emb.0.0.weight" in u:
        in_dim = int(u["label_emb.0.0.weight"].shape[1])
        if in_dim != cfg.get("projection_class_embeddings_input_dim"):
            pooled = pooled_dim if pooled_dim is not None else 1280
            if (in_dim - pooled) <= 0 or (in_dim - pooled) % 6:
                raise PipelineLoadError(f"the UNet's size/crop embedding takes {in_dim} values, which does not fit a "
                                        f"{pooled}-d pooled text embedding plus 6 size values")
            cfg.update(projection_class_embeddings_input_dim=in_dim, addition_time_embed_dim=(in_dim - pooled) // 6)
    return cfg


def vae_config_from_ldm(v: dict, arch: str) -> dict:
    """AutoencoderKL config from an LDM VAE state dict (prefix removed)."""
    cfg = shipped_config(arch, "vae")
    keys = list(v)
    levels = len(_indices(keys, r"encoder\.down\.(\d+)\."))
    lpb = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    channels = [int(v[f"encoder.down.{i}.block.{lpb - 1}.conv2.weight"].shape[0]) for i in range(levels)]
    return _vae_overlay(cfg, levels, lpb, channels, v["encoder.conv_in.weight"], v["decoder.conv_in.weight"],
                        v["decoder.conv_out.weight"], any(k.startswith("encoder.mid.attn_1.") for k in keys),
                        "quant_conv.weight" in v, "post_quant_conv.weight" in v)


def vae_config_from_diffusers(v: dict, arch: str) -> dict:
    """AutoencoderKL config from a diffusers-format VAE state dict."""
    cfg = shipped_config(arch, "vae")
    keys = list(v)
    levels = len(_indices(keys, r"encoder\.down_blocks\.(\d+)\."))
    lpb = len(_indices(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
    channels = [int(v[f"encoder.down_blocks.{i}.resnets.{lpb - 1}.conv2.weight"].shape[0]) for i in range(levels)]
    return _vae_overlay(cfg, levels, lpb, channels, v["encoder.conv_in.weight"], v["decoder.conv_in.weight"],
                        v["decoder.conv_out.weight"], any(k.startswith("encoder.mid_block.attentions.") for k in keys),
                        "quant_conv.weight" in v, "post_quant_conv.weight" in v)


def _vae_overlay(cfg, levels, lpb, channels, enc_in, dec_in, dec_out, mid_attn, quant, post_quant) -> dict:
    if levels == 0 or lpb == 0:
        raise PipelineLoadError("the VAE has no encoder blocks")
    cfg.update(in_channels=int(enc_in.shape[1]), out_channels=int(dec_out.shape[0]),
               latent_channels=int(dec_in.shape[1]), layers_per_block=lpb, block_out_channels=channels,
               down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels)
    if not mid_attn:
        cfg["mid_block_add_attention"] = False
    if not quant:
        cfg["use_quant_conv"] = False
    if not post_quant:
        cfg["use_post_quant_conv"] = False
    return cfg


def text_config(t: dict, arch: str, part: str) -> dict:
    """CLIPTextConfig dict from a diffusers-format CLIP text state dict without the `text_model.` prefix."""
    cfg = shipped_config(arch, part)
    tok = t["embeddings.token_embedding.weight"]
    hidden = int(tok.shape[1])
    layers = len(_indices(list(t), r"encoder\.layers\.(\d+)\."))
    cfg.update(vocab_size=int(tok.shape[0]), num_hidden_layers=layers,
               max_position_embeddings=int(t["embeddings.position_embedding.weight"].shape[0]),
               intermediate_size=int(t["encoder.layers.0.mlp.fc1.weight"].shape[0]))
    if hidden != cfg["hidden_size"]:
        cfg.update(hidden_size=hidden, num_attention_heads=max(1, hidden // 64), projection_dim=hidden)
    if "text_projection.weight" in t:
        cfg["projection_dim"] = int(t["text_projection.weight"].shape[0])
    return cfg


# ================================================================ conversion
def _flat_text(d: dict) -> dict:
    """CLIP text keys without `text_model.` and without the position_ids buffer older files carry."""
    out = {}
    for k, v in d.items():
        k = k.removeprefix("text_model.")
        if k != "embeddings.position_ids":
            out[k] = v
    return out


def convert(sd: dict, arch: str) -> dict:
    """{component: (config, diffusers state dict)} for unet, vae, text_encoder (and text_encoder_2)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    out = {}
    if arch == "sdxl":
        g = {k: v for k, v in sd.items() if k.startswith(SDXL_TEXT2)}
        width = int(g[SDXL_TEXT2 + "token_embedding.weight"].shape[1])
        stub = SimpleNamespace(config=SimpleNamespace(hidden_size=width))
        t2 = _flat_text(convert_open_clip_checkpoint(stub, g, prefix=SDXL_TEXT2))
        out["text_encoder_2"] = (text_config(t2, arch, "text_encoder_2"), t2)
        t1 = _flat_text(_sub(sd, SDXL_TEXT1))
        out["text_encoder"] = (text_config(t1, arch, "text_encoder"), t1)
        pooled = out["text_encoder_2"][0]["projection_dim"]
    else:
        t1 = _flat_text(_sub(sd, SD15_TEXT))
        out["text_encoder"] = (text_config(t1, arch, "text_encoder"), t1)
        pooled = None
    u = {k: v for k, v in sd.items() if k.startswith(UNET)}
    ucfg = unet_config(_sub(u, UNET), arch, pooled)
    out["unet"] = (ucfg, convert_ldm_unet_checkpoint(u, copy.deepcopy(ucfg)))
    v = {k: v for k, v in sd.items() if k.startswith(VAE)}
    vcfg = vae_config_from_ldm(_sub(v, VAE), arch)
    out["vae"] = (vcfg, convert_ldm_vae_checkpoint(v, copy.deepcopy(vcfg)))
    return out


def convert_vae_file(sd: dict, arch: str, name: str) -> tuple[dict, dict]:
    """(config, diffusers state dict) of a standalone VAE file: LDM layout (optionally under first_stage_model.
    or vae.), diffusers layout, or a whole checkpoint (its VAE is taken)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    for prefix in (VAE, "vae.", ""):
        v = _sub(sd, prefix) if prefix else sd
        if "encoder.conv_in.weight" in v and "decoder.conv_in.weight" in v:
            if any(k.startswith("encoder.down.") for k in v):
                cfg = vae_config_from_ldm(v, arch)
                return cfg, convert_ldm_vae_checkpoint({VAE + k: t for k, t in v.items()}, copy.deepcopy(cfg))
            if any(k.startswith("encoder.down_blocks.") for k in v):
                return vae_config_from_diffusers(v, arch), dict(v)
    raise PipelineLoadError(describe_foreign(sd, name).replace("is not an SD1.5 or SDXL checkpoint",
                                                               "is not a VAE")
                            .replace(WHERE, f"Put an {ARCH_NAMES.get(arch, arch)} VAE in models/vae."))


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _describe_other_family(sd, keys) -> str | None:  # before LoRAs and ControlNets: their keys can look alike
    if not identify.contains(keys, "joint_blocks.", "double_blocks.", "single_blocks."):
        return None
    return f"{unsupported_family(sd, keys)}, which VisionKit does not run (it runs SD1.5 and SDXL)"


def _describe_checkpoint(sd, keys) -> str | None:
    if not _has(keys, UNET, "conditioner.embedders.", "cond_stage_model."):
        return None
    other = unsupported_family(sd, keys)
    if other:
        return f"{other}, which VisionKit does not run (it runs SD1.5 and SDXL)"
    return f"a full Stable Diffusion checkpoint: {identify.goes('checkpoint')}"


def _describe_vae(sd, keys) -> str | None:
    if ({"encoder.conv_in.weight", "decoder.conv_in.weight"} <= set(keys)
            or {f"{VAE}encoder.conv_in.weight", f"{VAE}decoder.conv_in.weight"} <= set(keys)):
        return f"a VAE alone: {identify.goes('vae')}"
    return None


def _describe_diffusers_unet(sd, keys) -> str | None:
    if "conv_in.weight" in sd and _has(keys, "down_blocks.") and _has(keys, "time_embedding."):
        return ("a diffusers-format UNet alone (diffusion_pytorch_model.safetensors): use the whole diffusers folder, "
                "the one with model_index.json, from models/diffusers")
    return None


identify.register("checkpoint", _describe_other_family, order=20,
                  place=identify.Place("checkpoints", "VisionKitPipelineLoader"))
identify.register("checkpoint", _describe_checkpoint, order=40)
identify.register("vae", _describe_vae, order=60,
                  place=identify.Place("vae", "VisionKitPipelineLoader", " as its vae_name"))
identify.register("diffusers_unet", _describe_diffusers_unet, order=70)
