"""ControlNet files → a diffusers ControlNetModel: the file's layout, LDM → diffusers names, the config read from
the weights, building without random initialisation.

Files (from the `controlnet` folder):
- diffusers folders (config.json + diffusion_pytorch_model[.fp16].safetensors / .bin);
- diffusers single files (`controlnet_cond_embedding.*`, `down_blocks.*`, ...);
- the original LDM layout (`control_model.*`, or the same keys without the prefix, e.g. lllyasviel's
  control_v11p_sd15_canny); converted to diffusers names here (any number of blocks / hint convs).
Single files get their diffusers ControlNetModel config from the tensor shapes (channels, blocks,
layers, transformer depth, cross-attention width, linear or conv projections, hint channels, SDXL's
add_embedding) overlaid on the SD1.5 / SDXL defaults. What shapes cannot tell follows the
architecture: attention heads (SD1.5: 8; SDXL: 64-wide heads), SDXL's size-embedding width (256;
corrected at run time to the pipeline UNet's), `global_pool_conditions` (the SD1.5 'shuffle' model,
recognised by its file name). A `<file stem>.json` diffusers config beside a single file overrides all
of it. Nothing is fetched from the hub. T2I-Adapters, Control-LoRAs, ControlLLLite, union and
SD3/Flux ControlNets are refused with a message saying so.
"""
from __future__ import annotations

import json
import os
import re

import torch

from ..core import identify
from ..core.weights import WeightsError, load_state_dict
from .types import GenerationError


class ControlNetError(GenerationError):
    """A ControlNet file that cannot be used, or one that does not fit the pipeline."""


# ------------------------------------------------------------------ recognising the file
def _refuse_variants(keys: list[str], name: str) -> None:
    def has(*parts):
        return any(p in k for k in keys for p in parts)

    if "lora_controlnet" in keys:
        raise ControlNetError(f"{name} is a Control-LoRA (a LoRA of a ControlNet); VisionKit runs full ControlNets. "
                              "Use the full ControlNet file.")
    if has("lllite"):
        raise ControlNetError(f"{name} is a ControlLLLite model; VisionKit runs full ControlNets only.")
    if has("task_embedding", "transformer_layes", "spatial_ch_projs"):
        raise ControlNetError(f"{name} is a ControlNet Union (ProMax) model; VisionKit runs single-task ControlNets.")
    if any(k.startswith(("adapter.body", "body.0.resnets", "adapter.conv_in")) for k in keys):
        raise ControlNetError(f"{name} is a T2I-Adapter, not a ControlNet; VisionKit does not run T2I-Adapters yet.")
    if has("controlnet_blocks.", "controlnet_single_blocks", "pos_embed_input", "controlnet_x_embedder"):
        raise ControlNetError(f"{name} is a ControlNet for a transformer model (SD3 / Flux); VisionKit runs SD1.5 "
                              "and SDXL ControlNets.")


def _layout(sd: dict, name: str) -> str:
    keys = list(sd)
    _refuse_variants(keys, name)
    if any(k.startswith("control_model.") for k in keys) or "input_hint_block.0.weight" in sd:
        return "ldm"
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        return "diffusers"
    raise ControlNetError(f"{name} is not a ControlNet: it looks like {identify.what_is(sd, exclude='controlnet')}. Put ControlNet "
                          "files (e.g. control_v11p_sd15_canny_fp16.safetensors) in models/controlnet.")


_RESNET = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"), ("out_layers.3", "conv2"),
           ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut"))


def _resnet_rest(rest: str) -> str:
    for a, b in _RESNET:
        if rest == a or rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def convert_ldm_controlnet(sd: dict, name: str = "ControlNet") -> dict:
    """Original `control_model.*` ControlNet weights → diffusers ControlNetModel names."""
    if any(k.startswith("control_model.") for k in sd):
        sd = {k[len("control_model."):]: v for k, v in sd.items() if k.startswith("control_model.")}
    out: dict = {}
    simple = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
              "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
              "input_blocks.0.0": "conv_in", "middle_block_out.0": "controlnet_mid_block"}
    hint = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k))})
    if len(hint) < 2:
        raise ControlNetError(f"{name}: the ControlNet hint encoder (input_hint_block) is missing; damaged file?")
    hint_map = {hint[0]: "controlnet_cond_embedding.conv_in", hint[-1]: "controlnet_cond_embedding.conv_out"}
    hint_map.update({h: f"controlnet_cond_embedding.blocks.{i}" for i, h in enumerate(hint[1:-1])})
    inputs = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    ops = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", k))})
    lpb = (ops[0] - 1) if ops else (len(inputs) - 1)
    if lpb < 1:
        raise ControlNetError(f"{name}: cannot read the block layout of this ControlNet (input blocks {inputs[:6]})")

    mid_attn = any(k.startswith(("middle_block.1.transformer_blocks.", "middle_block.1.proj_in.")) for k in sd)

    def put(new, tensor_key):
        out[new] = sd[tensor_key]

    for k in sd:
        module, _, param = k.rpartition(".")
        if module in simple:
            put(f"{simple[module]}.{param}", k)
            continue
        m = re.match(r"input_hint_block\.(\d+)$", module)
        if m:
            put(f"{hint_map[int(m.group(1))]}.{param}", k)
            continue
        m = re.match(r"zero_convs\.(\d+)\.0$", module)
        if m:
            put(f"controlnet_down_blocks.{m.group(1)}.{param}", k)
            continue
        m = re.match(r"input_blocks\.(\d+)\.(\d+)(?:\.(.+))?$", k)
        if m and int(m.group(1)) > 0:
            i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3) or ""
            b, layer = (i - 1) // (lpb + 1), (i - 1) % (lpb + 1)
            if layer == lpb:  # the downsampler
                put(f"down_blocks.{b}.downsamplers.0.conv.{rest.removeprefix('op.')}", k)
            elif j == 0:
                put(f"down_blocks.{b}.resnets.{layer}.{_resnet_rest(rest)}", k)
            else:
                put(f"down_blocks.{b}.attentions.{layer}.{rest}", k)
            continue
        m = re.match(r"middle_block\.(\d+)\.(.+)$", k)
        if m:
            j, rest = int(m.group(1)), m.group(2)
            if mid_attn and j == 1:
                put(f"mid_block.attentions.0.{rest}", k)
            else:
                put(f"mid_block.resnets.{j // 2 if mid_attn else j}.{_resnet_rest(rest)}", k)
            continue
        raise ControlNetError(f"{name}: unexpected tensor {k} in an LDM-layout ControlNet")
    return out


def detect_arch(sd: dict, name: str = "ControlNet") -> str:
    """sd15 / sdxl from diffusers-named weights (add_embedding = SDXL; the cross-attention width)."""
    cross = {int(v.shape[1]) for k, v in sd.items() if re.search(r"attn2\.to_k\.weight$", k)}
    if "add_embedding.linear_1.weight" in sd:
        return "sdxl"
    if 1024 in cross:
        raise ControlNetError(f"{name} is a ControlNet for Stable Diffusion 2.x (1024-wide cross-attention); "
                              "VisionKit runs SD1.5 and SDXL ControlNets")
    if 2048 in cross:
        return "sdxl"
    return "sd15"


def _count(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def config_from_state_dict(sd: dict, arch: str, name: str = "ControlNet") -> dict:
    """A diffusers ControlNetModel config read from diffusers-named weights (see the module docstring)."""
    try:
        nb = _count(sd, r"down_blocks\.(\d+)\.")
        block_out = [int(sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(nb)]
        lpb = _count(sd, r"down_blocks\.0\.resnets\.(\d+)\.")
        cross_blocks = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in sd) for i in range(nb)]
        depth = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1 for i in range(nb)]
        mid_attn = any(k.startswith("mid_block.attentions.") for k in sd)
        mid_depth = _count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
        proj = next(v for k, v in sd.items() if k.endswith("proj_in.weight")) if any(cross_blocks) or mid_attn else None
        cross_dim = next((int(v.shape[1]) for k, v in sd.items() if k.endswith("attn2.to_k.weight")), 768)
        cond = sd["controlnet_cond_embedding.conv_in.weight"]
        nblk = _count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
        cond_channels = [int(cond.shape[0])] + [int(sd[f"controlnet_cond_embedding.blocks.{2 * j + 1}.weight"].shape[0])
                                                for j in range(nblk // 2)]
    except (KeyError, StopIteration) as ex:
        raise ControlNetError(f"{name}: cannot read the ControlNet's layout from its weights (missing {ex}); "
                              "the file is damaged or of an unsupported kind") from ex
    if mid_attn and mid_depth != depth[-1]:  # diffusers gives the mid block the last block's depth
        if cross_blocks[-1]:
            raise ControlNetError(f"{name}: its middle block has {mid_depth} transformer layers but its last block "
                                  f"{depth[-1]}; diffusers cannot build that layout")
        depth[-1] = mid_depth
    cfg = {
        "in_channels": int(sd["conv_in.weight"].shape[1]),
        "conditioning_channels": int(cond.shape[1]),
        "down_block_types": ["CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross_blocks],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attn else "UNetMidBlock2D",
        "block_out_channels": block_out,
        "layers_per_block": lpb,
        "transformer_layers_per_block": depth,
        "cross_attention_dim": cross_dim,
        "use_linear_projection": bool(proj is not None and proj.ndim == 2),
        "conditioning_embedding_out_channels": cond_channels,
        "norm_num_groups": 32,
        "attention_head_dim": 8 if arch == "sd15" else [max(1, c // 64) for c in block_out],
        "controlnet_conditioning_channel_order": "rgb",
        "global_pool_conditions": False,
    }
    if "add_embedding.linear_1.weight" in sd:
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]))
    return cfg


_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                 "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin", "model.safetensors")


def _read_folder(path: str, name: str) -> tuple[dict, dict]:
    cfg_path = os.path.join(path, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as ex:
        raise ControlNetError(f"{name}: cannot read its config.json ({ex})") from ex
    cls = cfg.get("_class_name", "ControlNetModel")
    if cls != "ControlNetModel":
        raise ControlNetError(f"{name} is a diffusers {cls}; VisionKit runs SD1.5 / SDXL ControlNetModel folders")
    for fn in _WEIGHT_FILES:
        if os.path.isfile(os.path.join(path, fn)):
            try:
                return cfg, load_state_dict(os.path.join(path, fn))
            except WeightsError as ex:
                raise ControlNetError(str(ex)) from ex
    raise ControlNetError(f"{name} has a config.json but no weights ({' or '.join(_WEIGHT_FILES[:3])}); the download "
                          "is incomplete")


def read_controlnet(path: str) -> tuple[dict, dict, str, str]:
    """(diffusers config, diffusers state dict, arch, layout) of a ControlNet file or folder."""
    name = os.path.basename(path.rstrip(os.sep))
    if os.path.isdir(path):
        cfg, sd = _read_folder(path, name)
        _layout(sd, name)
        if cfg.get("cross_attention_dim") == 1024 and not cfg.get("addition_embed_type"):
            raise ControlNetError(f"{name} is a ControlNet for Stable Diffusion 2.x; VisionKit runs SD1.5 and SDXL")
        arch = "sdxl" if cfg.get("addition_embed_type") == "text_time" else detect_arch(sd, name)
        return cfg, sd, arch, "diffusers folder"
    try:
        sd = load_state_dict(path)
    except WeightsError as ex:
        raise ControlNetError(str(ex)) from ex
    layout = _layout(sd, name)
    if layout == "ldm":
        sd = convert_ldm_controlnet(sd, name)
    arch = detect_arch(sd, name)
    cfg = config_from_state_dict(sd, arch, name)
    if "shuffle" in name.lower():
        cfg["global_pool_conditions"] = True  # control_v11e_sd15_shuffle pools its residuals (from its yaml)
    side = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(side):
        try:
            with open(side, encoding="utf-8") as f:
                cfg.update({k: v for k, v in json.load(f).items() if not k.startswith("_")})
        except (OSError, ValueError) as ex:
            raise ControlNetError(f"{name}: the config beside it ({os.path.basename(side)}) is not valid JSON: {ex}") \
                from ex
    return cfg, sd, arch, "LDM single file" if layout == "ldm" else "diffusers single file"


def build_controlnet(cfg: dict, sd: dict, name: str = "ControlNet"):
    """A ControlNetModel from a config and weights, without random initialisation (meta device)."""
    from diffusers import ControlNetModel

    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    try:
        with torch.device("meta"):
            model = ControlNetModel.from_config(cfg)
    except Exception as ex:
        raise ControlNetError(f"{name}: cannot build a ControlNet from its configuration ({str(ex)[:200]})") from ex
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as ex:
        raise ControlNetError(f"{name}: the weights do not fit the ControlNet layout read from them "
                              f"({str(ex).splitlines()[0][:300]}); the file is damaged or of an unsupported kind") \
            from ex
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ControlNetError(f"{name}: the file has no weights for {meta[:3]}")
    return model
