"""Tiny SD1.5 / SDXL pipelines, written as diffusers folders and as original (LDM) single-file checkpoints.

Every pipeline is built once from the configs below (the shipped SD1.5 / SDXL configs with tiny widths,
following the same conventions the loader uses for head counts), with seeded random weights, then saved
(a) as a diffusers folder (save_pretrained, safetensors) and (b) in the original single-file layout with
the LDM key names, written by the diffusers → LDM mapping in this file (the inverse of the loader's
conversion). The test compares the loader's single-file result with the folder, tensor by tensor.

- diffusers/tiny-sd15, checkpoints/tiny-sd15.safetensors: SD1.5 (UNet 32/64 channels, 2 layers per block,
  16-wide 2-layer CLIP-L, 4-level 32-channel VAE), all weights fp16 as most real files; the folder has its own tokenizer files;
- diffusers/tiny-sd15-inpaint, checkpoints/tiny-sd15-inpaint.safetensors: the same with a 9-channel UNet
  (the folder has no tokenizer files: the loader builds the standard one);
- diffusers/tiny-sdxl, checkpoints/tiny-sdxl.safetensors: SDXL (DownBlock then CrossAttn with 2 transformer
  layers, 1 layer per block, CLIP-L 16 wide + OpenCLIP-bigG 24 wide with a 20-d projection, size/crop
  embedding); the file's OpenCLIP part is in open_clip's layout (in_proj, c_fc, text_projection (in, out));
- vae/tiny-vae.safetensors (LDM layout) and vae/tiny-vae-folder/ (diffusers folder): an SD-shaped VAE
  with other weights, for the VAE override.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch

from .tiny_models import _perturb, _save_safetensors, _seeded, builder

UNET, VAE = "model.diffusion_model.", "first_stage_model."


@functools.cache
def _shipped(arch: str, part: str) -> str:
    from visionkit_pack.models.sd.convert import CONFIG_DIR

    name = {"scheduler": "scheduler_config.json", "": "model_index.json"}.get(part, "config.json")
    return (Path(CONFIG_DIR) / arch / part / name).read_text()


def shipped(arch: str, part: str, **over) -> dict:
    cfg = json.loads(_shipped(arch, part))
    cfg.update(over)
    return cfg


VAE_TINY = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
SD15 = {
    "unet": dict(block_out_channels=[32, 64], layers_per_block=2, cross_attention_dim=16, attention_head_dim=8,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"]),
    "vae": VAE_TINY,
    "text_encoder": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=1,
                         projection_dim=16),
}
SDXL = {
    "unet": dict(block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=40, attention_head_dim=[1, 1],
                 transformer_layers_per_block=[1, 2], addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 20,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"]),
    "vae": VAE_TINY,
    "text_encoder": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=1,
                         projection_dim=16),
    "text_encoder_2": dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=1,
                           projection_dim=20),
}


def tiny_components(arch: str, seed: int = 0, in_channels: int = 4) -> dict:
    """{part: module} of a tiny pipeline; same seed → same weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = SD15 if arch == "sd15" else SDXL
    out = {}
    _seeded(seed)
    out["unet"] = UNet2DConditionModel.from_config(shipped(arch, "unet", in_channels=in_channels, **spec["unet"]))
    _seeded(seed + 1)
    out["vae"] = AutoencoderKL.from_config(shipped(arch, "vae", **spec["vae"]))
    _seeded(seed + 2)
    te = shipped(arch, "text_encoder", **spec["text_encoder"])
    te.pop("architectures")
    out["text_encoder"] = CLIPTextModel(CLIPTextConfig(**te))
    if arch == "sdxl":
        _seeded(seed + 3)
        te2 = shipped(arch, "text_encoder_2", **spec["text_encoder_2"])
        te2.pop("architectures")
        out["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**te2))
    for i, m in enumerate(out.values()):
        _seeded(seed + 10 + i)
        _perturb(m, 0.05)
        m.eval()
    return out


# ================================================================ diffusers → LDM keys (the loader's inverse)
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet(rest: str, table=_RESNET) -> str:
    first, _, tail = rest.partition(".")
    return f"{table.get(first, first)}.{tail}"


def unet_key_to_ldm(k: str, cfg: dict) -> str:
    lpb = cfg["layers_per_block"]
    head, _, param = k.rpartition(".")
    if head in _UNET_FIXED:
        return f"{_UNET_FIXED[head]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = 1 + b * (lpb + 1) + j
        return f"input_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", k):
        return f"middle_block.{0 if m[1] == '0' else 2}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)", k):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = b * (lpb + 1) + j
        return f"output_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
        b = int(m[1])
        slot = 2 if cfg["up_block_types"][b].startswith("CrossAttn") else 1
        return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {k}")


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def vae_to_ldm(sd: dict, cfg: dict) -> dict:
    n = len(cfg["up_block_types"])
    out = {}
    for k, v in sd.items():
        side, _, rest = k.partition(".")
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            rest = f"down.{m[1]}.block.{m[2]}.{_resnet(m[3], {'conv_shortcut': 'nin_shortcut'})}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
            rest = f"down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            rest = f"up.{n - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3], {'conv_shortcut': 'nin_shortcut'})}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
            rest = f"up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
            rest = f"mid.block_{int(m[1]) + 1}.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", rest):
            rest = f"mid.attn_1.{_VAE_ATTN[m[1].split('.')[0]]}.{m[2]}"
            if m[2] == "weight" and m[1] != "group_norm":
                v = v[:, :, None, None]  # LDM's attention projections are 1×1 convolutions
        elif rest.startswith("conv_norm_out."):
            rest = "norm_out." + rest[len("conv_norm_out."):]
        out[f"{side}.{rest}"] = v
    return out


def _flat(sd: dict) -> dict:
    return {k.removeprefix("text_model."): v for k, v in sd.items()}


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    return {f"{prefix}text_model.{k}": v for k, v in _flat(sd).items()}


def open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    t = _flat(sd)
    out = {prefix + "token_embedding.weight": t["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": t["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": t["final_layer_norm.weight"], prefix + "ln_final.bias": t["final_layer_norm.bias"],
           prefix + "text_projection": t["text_projection.weight"].T.contiguous(),
           prefix + "logit_scale": torch.tensor(4.6052)}
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = sorted({int(k.split(".")[2]) for k in t if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[dst + f"attn.in_proj_{p}"] = torch.cat([t[src + f"self_attn.{q}_proj.{p}"] for q in "qkv"])
            for a, b in names.items():
                out[dst + f"{b}.{p}"] = t[src + f"{a}.{p}"]
    return out


def to_single_file(comps: dict, arch: str) -> dict:
    """The original single-file state dict of a tiny pipeline (what a user's .safetensors holds)."""
    u = comps["unet"]
    sd = {UNET + unet_key_to_ldm(k, u.config): v for k, v in u.state_dict().items()}
    sd.update({VAE + k: v for k, v in vae_to_ldm(comps["vae"].state_dict(), comps["vae"].config).items()})
    if arch == "sd15":
        sd.update(clip_to_ldm(comps["text_encoder"].state_dict(), "cond_stage_model.transformer."))
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        sd["model_ema.decay"] = torch.tensor(0.9999)
    else:
        sd.update(clip_to_ldm(comps["text_encoder"].state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_ldm(comps["text_encoder_2"].state_dict(), "conditioner.embedders.1.model."))
    sd["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


# ================================================================ writing
def save_folder(comps: dict, arch: str, out: Path, tokenizers: bool = True) -> None:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    out.mkdir(parents=True, exist_ok=True)
    for part, m in comps.items():
        m.save_pretrained(str(out / part), safe_serialization=True)
    sched = shipped(arch, "scheduler")
    (EulerDiscreteScheduler if arch == "sdxl" else PNDMScheduler).from_config(sched).save_pretrained(str(out / "scheduler"))
    (out / "model_index.json").write_text(_shipped(arch, ""))
    if tokenizers:
        for part, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!"))[:2 if arch == "sdxl" else 1]:
            write_tokenizer(out / part, pad)


def write_tokenizer(d: Path, pad: str) -> None:
    """The classic tokenizer files of SD folders (vocab.json, merges.txt, the two small JSONs)."""
    from visionkit_pack.models.perception.clip_inputs import bpe_vocab_and_merges

    vocab, merges = bpe_vocab_and_merges()
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    (d / "special_tokens_map.json").write_text(json.dumps(special))
    (d / "tokenizer_config.json").write_text(json.dumps({**special, "tokenizer_class": "CLIPTokenizer",
                                                         "model_max_length": 77, "do_lower_case": True}))


def vae_override(seed: int = 40):
    from diffusers import AutoencoderKL

    _seeded(seed)
    vae = AutoencoderKL.from_config(shipped("sd15", "vae", **VAE_TINY))
    _perturb(vae, 0.05)
    return vae.eval()


@builder
def sd_pipelines(root: Path) -> None:
    for name, arch, seed, in_ch, tok in (("tiny-sd15", "sd15", 0, 4, True), ("tiny-sd15-inpaint", "sd15", 20, 9, False),
                                         ("tiny-sdxl", "sdxl", 30, 4, True)):
        comps = {k: m.half() for k, m in tiny_components(arch, seed, in_ch).items()}  # fp16, as most real files
        save_folder(comps, arch, root / "diffusers" / name, tokenizers=tok)
        _save_safetensors(to_single_file(comps, arch), root / "checkpoints" / f"{name}.safetensors")
    vae = vae_override().half()
    _save_safetensors({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()},
                      root / "vae" / "tiny-vae.safetensors")
    vae.save_pretrained(str(root / "vae" / "tiny-vae-folder"), safe_serialization=True)
