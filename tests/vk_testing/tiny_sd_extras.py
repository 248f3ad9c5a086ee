"""Tiny LoRA and ControlNet files in their real formats, for the LoRA / ControlNet tests.

The base models they belong to (a tiny SD1.5-shaped and a tiny SDXL-shaped UNet with their text
encoders) are rebuilt in memory from a seed (`tiny_base(arch)`), so the tests and these files always
agree. One LoRA (`tiny_lora_layers`) is written in every format a user may have: kohya with diffusers
names, kohya with SDXL's LDM/sgm names, PEFT (diffusers' current format, alpha in the metadata), the
older diffusers attention-processor format. ControlNets: diffusers folders, diffusers single files and
the original LDM `control_model.*` layout. Shapes follow the SD1.5 / SDXL rules the loader uses for
single files (norm groups 32; SD1.5 8 heads; SDXL 64-wide heads, at least one).

Real-size LoRAs (a few layers with SD1.5's 768-wide / SDXL's 2048-wide cross-attention) exist for
the architecture-detection messages.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .tiny_models import _save_safetensors, builder

SEEDS = {"sd15": 1501, "sdxl": 1502}


@dataclass
class TinyBase:
    arch: str
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    text_encoder_2: torch.nn.Module | None = None
    tokenizer: object = None
    tokenizer_2: object = None
    vae: object = None
    scheduler_config: dict = None
    inpaint: bool = False
    prediction: str = "epsilon"

    def vk_modules(self):
        return [m for m in (self.unet, self.text_encoder, self.text_encoder_2) if m is not None]


def _perturb(module, std=0.02, only=None):
    with torch.no_grad():
        for n, p in module.named_parameters():
            if only is None or any(s in n for s in only):
                p.add_(torch.randn_like(p) * std)


def unet_config(arch: str) -> dict:
    if arch == "sd15":
        return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                    attention_head_dim=8, norm_num_groups=32)
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                cross_attention_dim=64, attention_head_dim=(1, 1), use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=32 + 6 * 8, norm_num_groups=32)


def tiny_base(arch: str) -> TinyBase:
    """The seeded tiny UNet + text encoder(s) the LoRA / ControlNet fixtures are made for."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEEDS[arch])
    unet = UNet2DConditionModel(**unet_config(arch))
    _perturb(unet)
    te_cfg = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**te_cfg)) if arch == "sdxl" else None
    return TinyBase(arch, unet.eval(), te.eval(), te2.eval() if te2 is not None else None)


# ---------------------------------------------------------------- LoRA (ground truth in module names)
def lora_targets(module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
            and not n.endswith(("conv_out", "conv_norm_out")) and "text_projection" not in n]


def tiny_lora_layers(base: TinyBase, seed: int = 7, rank: int = 4, alpha: float = 2.0, std: float = 0.05):
    """{component: {module name: (down, up, alpha)}} covering every Linear/Conv2d (3×3 convs included)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(base, comp)
        if module is None:
            continue
        layers = {}
        for name in lora_targets(module):
            w = module.get_submodule(name).weight
            if w.ndim == 4:
                down = torch.randn(rank, w.shape[1], w.shape[2], w.shape[3], generator=g) * std
                up = torch.randn(w.shape[0], rank, 1, 1, generator=g) * std
            else:
                down = torch.randn(rank, w.shape[1], generator=g) * std
                up = torch.randn(w.shape[0], rank, generator=g) * std
            layers[name] = (down, up, alpha)
        out[comp] = layers
    return out


def sgm_name(name: str, cfg: dict) -> str:
    """diffusers UNet module name → kohya-SDXL's sgm name (written here independently of the pack)."""
    lpb = cfg["layers_per_block"]
    nblocks = len(cfg["block_out_channels"])
    res = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
    p = name.split(".")
    simple = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
              "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
              "add_embedding.linear_2": "label_emb.0.2"}
    if name in simple:
        return simple[name]

    def tail(kind, rest):
        if kind == "resnets":
            return ".".join([res[rest[0]]] + rest[1:])
        return ".".join(rest)

    if p[0] == "down_blocks":
        b, kind = int(p[1]), p[2]
        if kind == "downsamplers":
            return f"input_blocks.{(b + 1) * (lpb + 1)}.0.op"
        i = 1 + b * (lpb + 1) + int(p[3])
        return f"input_blocks.{i}.{0 if kind == 'resnets' else 1}.{tail(kind, p[4:])}"
    if p[0] == "mid_block":
        kind, l = p[1], int(p[2])
        i = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, l)]
        return f"middle_block.{i}.{tail(kind, p[3:])}"
    if p[0] == "up_blocks":
        b, kind = int(p[1]), p[2]
        has_attn = "CrossAttn" in cfg["up_block_types"][b]
        if kind == "upsamplers":
            return f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attn else 1}.conv"
        i = b * (lpb + 1) + int(p[3])
        return f"output_blocks.{i}.{0 if kind == 'resnets' else 1}.{tail(kind, p[4:])}"
    assert nblocks
    raise KeyError(name)


def kohya_state_dict(layers: dict, unet_naming: str = "diffusers", cfg: dict | None = None, dtype=torch.float16):
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if "text_encoder_2" in layers else "lora_te_",
                "text_encoder_2": "lora_te2_"}
    sd = {}
    for comp, mods in layers.items():
        for name, (down, up, alpha) in mods.items():
            n = name
            if comp == "unet" and unet_naming == "sgm":
                n = sgm_name(name, cfg)
            elif comp != "unet" and not n.startswith("text_model."):
                n = "text_model." + n  # kohya writes transformers' full names
            k = prefixes[comp] + n.replace(".", "_")
            sd[f"{k}.lora_down.weight"] = down.to(dtype)
            sd[f"{k}.lora_up.weight"] = up.to(dtype)
            sd[f"{k}.alpha"] = torch.tensor(float(alpha))
    return sd


def peft_state_dict(layers: dict, dtype=torch.float16):
    """diffusers' save_lora_weights format; returns (state dict, lora_adapter_metadata)."""
    sd, meta = {}, {}
    for comp, mods in layers.items():
        for name, (down, up, alpha) in mods.items():
            n = name if comp == "unet" or name.startswith("text_model.") else "text_model." + name
            sd[f"{comp}.{n}.lora_A.weight"] = down.to(dtype)
            sd[f"{comp}.{n}.lora_B.weight"] = up.to(dtype)
            rank = down.shape[0]
            meta.update({f"{comp}.r": rank, f"{comp}.lora_alpha": alpha,
                         f"{comp}.target_modules": sorted(mods)})
    return sd, meta


def old_diffusers_state_dict(layers: dict, dtype=torch.float32):
    """The older diffusers layout: attention processors (`processor.to_q_lora.down`), `.lora.down` elsewhere,
    text encoders with `lora_linear_layer`; alphas folded into the up weights (that format had no alpha)."""
    sd = {}
    for comp, mods in layers.items():
        for name, (down, up, alpha) in mods.items():
            down, up = down.half().float(), up.half().float() * (alpha / down.shape[0])
            if comp == "unet":
                m = name
                for a, b in (("attn1.to_q", "attn1.processor.to_q_lora"), ("attn1.to_k", "attn1.processor.to_k_lora"),
                             ("attn1.to_v", "attn1.processor.to_v_lora"),
                             ("attn1.to_out.0", "attn1.processor.to_out_lora"),
                             ("attn2.to_q", "attn2.processor.to_q_lora"), ("attn2.to_k", "attn2.processor.to_k_lora"),
                             ("attn2.to_v", "attn2.processor.to_v_lora"),
                             ("attn2.to_out.0", "attn2.processor.to_out_lora")):
                    if name.endswith(a):
                        m = name[: -len(a)] + b
                        break
                if m != name:
                    sd[f"unet.{m}.down.weight"] = down.to(dtype)
                    sd[f"unet.{m}.up.weight"] = up.to(dtype)
                else:
                    sd[f"unet.{name}.lora.down.weight"] = down.to(dtype)
                    sd[f"unet.{name}.lora.up.weight"] = up.to(dtype)
            else:
                n = name if name.startswith("text_model.") else "text_model." + name
                sd[f"{comp}.{n}.lora_linear_layer.down.weight"] = down.to(dtype)
                sd[f"{comp}.{n}.lora_linear_layer.up.weight"] = up.to(dtype)
    return sd


def _save_with_meta(sd: dict, path: Path, meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    md = {"format": "pt"}
    if meta:
        md["lora_adapter_metadata"] = json.dumps(meta, sort_keys=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=md)


def real_size_lora(arch: str, seed: int = 3) -> dict:
    """A few kohya layers with the real cross-attention width (SD1.5 768 / SDXL 2048)."""
    g = torch.Generator().manual_seed(seed)
    dim, width = (768, 320) if arch == "sd15" else (2048, 640)
    base = ("down_blocks_0_attentions_0" if arch == "sd15" else "down_blocks_1_attentions_0") \
        + "_transformer_blocks_0_attn2_to_k"
    return {f"lora_unet_{base}.lora_down.weight": torch.randn(4, dim, generator=g).half(),
            f"lora_unet_{base}.lora_up.weight": torch.randn(width, 4, generator=g).half(),
            f"lora_unet_{base}.alpha": torch.tensor(4.0)}


@functools.cache
def _shared_base(arch: str) -> TinyBase:
    """tiny_base for the builders only (read, never changed): built once per session."""
    return tiny_base(arch)


@builder
def sd_loras(root: Path) -> None:
    d = root / "loras"
    for arch in ("sd15", "sdxl"):
        base = _shared_base(arch)
        layers = tiny_lora_layers(base)
        naming = "diffusers" if arch == "sd15" else "sgm"
        _save_with_meta(kohya_state_dict(layers, naming, unet_config(arch)), d / f"tiny-{arch}-lora-kohya.safetensors")
        sd, meta = peft_state_dict(layers)
        _save_with_meta(sd, d / f"tiny-{arch}-lora-peft.safetensors", meta)
        _save_with_meta(old_diffusers_state_dict(layers), d / f"tiny-{arch}-lora-diffusers-old.safetensors")
        second = tiny_lora_layers(base, seed=8, rank=2, alpha=1.0)
        _save_with_meta(kohya_state_dict(second, "diffusers"), d / f"tiny-{arch}-lora-b.safetensors")
        _save_with_meta(real_size_lora(arch), d / f"real-size-{arch}-lora.safetensors")
        # the marker a test pipeline spec points at (not in any model folder)
        (root / "vk_extras").mkdir(exist_ok=True)
        (root / "vk_extras" / f"tiny-{arch}-base.json").write_text(json.dumps({"arch": arch}))


# ---------------------------------------------------------------- ControlNet
CN_COND_CHANNELS = (16, 16, 32, 32)  # 4 levels like the real (16, 32, 96, 256): 8× downscale, hint convs 0..14


def tiny_controlnet(arch: str, seed: int = 11, unet=None):
    """A ControlNetModel made from the tiny base UNet, every weight (zero convs included) non-zero."""
    from diffusers import ControlNetModel

    unet = unet if unet is not None else _shared_base(arch).unet
    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CN_COND_CHANNELS)
    _perturb(cn, 0.05)
    _perturb(cn, 0.5, only=("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out"))
    with torch.no_grad():  # values an fp16 file holds exactly, so every format below has the same weights
        for p in cn.parameters():
            p.copy_(p.half().float())
    return cn.eval()


def controlnet_to_ldm(sd: dict, cfg) -> dict:
    """diffusers ControlNet weights → the original `control_model.*` layout (written independently here)."""
    out = {}
    n_hint = len(cfg["conditioning_embedding_out_channels"])
    ucfg = {"layers_per_block": cfg["layers_per_block"], "block_out_channels": cfg["block_out_channels"],
            "up_block_types": []}
    for k, v in sd.items():
        module, _, param = k.rpartition(".")
        p = module.split(".")
        if p[0] == "controlnet_cond_embedding":
            if p[1] == "conv_in":
                idx = 0
            elif p[1] == "conv_out":
                idx = 2 * (2 * (n_hint - 1) + 1)
            else:
                idx = 2 * (int(p[2]) + 1)
            new = f"input_hint_block.{idx}"
        elif p[0] == "controlnet_down_blocks":
            new = f"zero_convs.{p[1]}.0"
        elif module == "controlnet_mid_block":
            new = "middle_block_out.0"
        else:
            new = sgm_name(module, ucfg)
        out[f"control_model.{new}.{param}"] = v
    return out


def _save_controlnet(cn, d: Path, name: str, folder=False, ldm=False, single=True) -> None:
    sd = {k: v.half() for k, v in cn.state_dict().items()}
    if folder:
        cn.save_pretrained(str(d / name), safe_serialization=True)
    if single:
        _save_safetensors(sd, d / f"{name}.safetensors")
    if ldm:
        _save_safetensors(controlnet_to_ldm(sd, cn.config), d / f"{name}-ldm.safetensors")


@builder
def sd_controlnets(root: Path) -> None:
    d = root / "controlnet"
    for arch in ("sd15", "sdxl"):
        unet = _shared_base(arch).unet
        _save_controlnet(tiny_controlnet(arch, 11, unet), d, f"tiny-{arch}-controlnet", folder=True, ldm=arch == "sd15")
        _save_controlnet(tiny_controlnet(arch, 12, unet), d, f"tiny-{arch}-controlnet-b")
    # ControlNets and LoRAs shaped for the tiny pipelines of tiny_sd.py (diffusers/tiny-sd15, tiny-sdxl), for
    # workflows that chain them; only their shapes must match those pipelines
    try:
        from .tiny_sd import tiny_components
    except ImportError:  # pragma: no cover - the pipeline fixtures are not there
        return
    for arch in ("sd15", "sdxl"):
        comps = tiny_components(arch)
        cn = tiny_controlnet(arch, 13, comps["unet"])
        _save_controlnet(cn, d, f"for-tiny-{arch}", ldm=arch == "sd15", single=arch == "sdxl")
        base = TinyBase(arch, comps["unet"], comps["text_encoder"], comps.get("text_encoder_2"))
        layers = tiny_lora_layers(base, seed=14)
        _save_with_meta(kohya_state_dict(layers, "diffusers" if arch == "sd15" else "sgm", dict(base.unet.config)),
                        root / "loras" / f"for-tiny-{arch}.safetensors")


# ---------------------------------------------------------------- a VK_PIPELINE over the tiny base models
def _build_base(spec, device):
    from visionkit_pack.models.core.cache import Loaded

    arch = json.loads(Path(spec.path).read_text())["arch"]
    base = tiny_base(arch)
    for m in base.vk_modules():
        m.to(device)
    return Loaded(base, meta={"arch": arch})


def base_pipeline_handle(root, arch: str):
    """A PipelineHandle whose components (through the cache) are `tiny_base(arch)`."""
    from visionkit_pack.models.core.cache import ModelSpec
    from visionkit_pack.models.sd.types import PipelineHandle

    spec = ModelSpec(kind="test_sd_base", path=str(Path(root) / "vk_extras" / f"tiny-{arch}-base.json"),
                     build=_build_base)
    return PipelineHandle(spec=spec, arch=arch, name=f"tiny-{arch}-base")
