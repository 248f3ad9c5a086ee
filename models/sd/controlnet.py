"""SD1.5 / SDXL ControlNets: loading (offline, config from the weights), hint images, per-step residuals.

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

VK_CONTROLNET_MODEL is `ControlNetHandle` (spec + arch + name); `VisionKitControlNetApply` appends a
`ControlEntry(kind="controlnet", model=handle, ...)` to the VK_CONTROL chain.

For the sampler (diffusers StableDiffusion[XL]ControlNetPipeline semantics):

    with ControlNetRun(control_chain, comps, do_classifier_free_guidance=cfg) as cn:
        for i, t in enumerate(timesteps):
            latent_model_input = ...                       # [uncond, cond] halves when cfg
            down, mid = cn.residuals(latent_model_input, t, prompt_embeds, i, len(timesteps),
                                     added_cond_kwargs)   # (None, None) when no ControlNet is active
            noise = unet(latent_model_input, t, prompt_embeds, added_cond_kwargs=...,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

An entry is active at step i of n when start <= i / n < end; its residuals are scaled by its strength
and the residuals of all active entries are summed (as diffusers' MultiControlNetModel does). The
hint image is prepared like diffusers' `prepare_image` for a tensor: resized (nearest, like diffusers)
to the latent size × the ControlNet's downscale (8: the output size for SD1.5/SDXL), RGB 0..1, one hint
repeated over the batch (or one per image), duplicated for the two CFG halves. Inpainting UNets: the
ControlNet sees the first (latent) channels only, as in diffusers' inpaint pipeline. Models run in
their cached dtype; the residuals come back in the latent's dtype.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.host import default_dtype
from ..core.imageops import check_image
from ..core.patching import RunPatches
from ..core.weights import WeightsError, load_state_dict
from .types import ARCH_NAMES, GenerationError, arch_mismatch, check_chain_arch
from ..core import identify

KIND = "sd_controlnet"
HANDLE_TYPE = "VK_CONTROLNET_MODEL"


class ControlNetError(GenerationError):
    """A ControlNet file that cannot be used, or one that does not fit the pipeline."""


@dataclass(frozen=True)
class ControlNetHandle:
    """VK_CONTROLNET_MODEL: the ControlNet file through the cache, and its architecture."""

    spec: ModelSpec
    arch: str  # "sd15" | "sdxl"
    name: str = ""


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
                          "files (e.g. control_v11p_sd15_canny.safetensors) in models/controlnet.")


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


# ------------------------------------------------------------------ building
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


def _torch_dtype(spec_dtype: str, device):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(spec_dtype) \
        or default_dtype(device)


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path.rstrip(os.sep))
    cfg, sd, arch, layout = read_controlnet(spec.path)
    model = build_controlnet(cfg, sd, name)
    model.eval().requires_grad_(False).to(device=device)
    dtype = _torch_dtype(spec.dtype, device)
    if next(model.parameters()).dtype != dtype:
        model.to(dtype=dtype)
    return Loaded(model, meta={"arch": arch, "layout": layout})


def controlnet_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=KIND, path=path, build=_build, dtype=dtype)


def load_controlnet(path: str, dtype: str = "auto") -> ControlNetHandle:
    """Load (or find in the cache) a ControlNet and return its handle (VK_CONTROLNET_MODEL)."""
    spec = controlnet_spec(path, dtype)
    entry = get_cache().load(spec)
    return ControlNetHandle(spec, entry.meta["arch"], os.path.basename(path.rstrip(os.sep)))


# ------------------------------------------------------------------ hint images
def prepare_hint(image, height: int, width: int, batch_size: int, device=None, dtype=None,
                 do_classifier_free_guidance: bool = False, guess_mode: bool = False) -> torch.Tensor:
    """IMAGE (B, H, W, C) 0..1 → the ControlNet condition (N, 3, height, width), like diffusers' prepare_image.

    One hint image is repeated over the batch; a batch of hints must have one per generated image.
    Resized with nearest-neighbour interpolation, as diffusers' VaeImageProcessor does for tensors.
    """
    img = check_image(image, "ControlNet image")[..., :3]
    x = img.permute(0, 3, 1, 2).to(torch.float32)
    x = torch.nn.functional.interpolate(x, size=(int(height), int(width)))
    b = x.shape[0]
    if b == 1:
        x = x.repeat_interleave(batch_size, dim=0)
    elif b != batch_size:
        raise ControlNetError(f"the ControlNet image batch has {b} images but {batch_size} images are generated; "
                              "give one hint image for all, or one per image")
    x = x.to(device=device, dtype=dtype)
    if do_classifier_free_guidance and not guess_mode:
        x = torch.cat([x] * 2)
    return x


def is_active(entry, step_index: int, total_steps: int) -> bool:
    """Whether `entry` applies at step `step_index` of `total_steps`: start <= step / total < end."""
    frac = step_index / max(int(total_steps), 1)
    return entry.start <= frac < entry.end


# ------------------------------------------------------------------ per-step residuals
def _check_fits(cn, unet, name: str) -> None:
    c, u = cn.config, unet.config
    if u.get("addition_embed_type") == "text_time" and c.get("addition_embed_type") != "text_time":
        raise arch_mismatch("ControlNet", "sd15", "sdxl")
    if c.get("addition_embed_type") == "text_time" and u.get("addition_embed_type") != "text_time":
        raise arch_mismatch("ControlNet", "sdxl", "sd15")
    if c.cross_attention_dim != u.cross_attention_dim:
        raise ControlNetError(f"the ControlNet {name} expects {c.cross_attention_dim}-wide prompt embeddings but the "
                              f"pipeline's are {u.cross_attention_dim}-wide: it was made for another model")
    if list(c.block_out_channels) != list(u.block_out_channels) or c.layers_per_block != u.layers_per_block:
        raise ControlNetError(f"the ControlNet {name} has blocks {list(c.block_out_channels)} × {c.layers_per_block} "
                              f"but the pipeline's UNet has {list(u.block_out_channels)} × {u.layers_per_block}: "
                              "it was made for another model")
    if hasattr(cn, "add_embedding") and hasattr(unet, "add_embedding"):
        a, b = cn.add_embedding.linear_1.in_features, unet.add_embedding.linear_1.in_features
        if a != b:
            raise ControlNetError(f"the ControlNet {name} expects {a} size/pooled features but the pipeline gives {b}: "
                                  "it was made for another SDXL-like model")


class ControlNetRun:
    """The ControlNet entries of a VK_CONTROL chain, ready for one sampling run (a context manager).

    Entering pins every ControlNet in the cache, checks it against the pipeline (architecture,
    widths) and holds it for the run; hint images are prepared once per latent shape.
    `residuals(...)` returns (down residuals list, mid residual) for the UNet, or (None, None).
    """

    def __init__(self, entries, comps, do_classifier_free_guidance: bool = False):
        self.entries = [e for e in entries or () if getattr(e, "kind", None) == "controlnet"]
        self.comps = comps
        self.cfg = bool(do_classifier_free_guidance)
        self._stack: ExitStack | None = None
        self._models: list = []
        self._hints: dict = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __enter__(self) -> ControlNetRun:
        check_chain_arch(self.entries, self.comps.arch)
        stack = ExitStack()
        try:
            cache = get_cache()
            by_spec: dict = {}
            for e in self.entries:
                handle = e.model
                if handle.spec not in by_spec:
                    cn = stack.enter_context(cache.use(handle.spec))
                    _check_fits(cn, self.comps.unet, handle.name or os.path.basename(handle.spec.path))
                    patches = stack.enter_context(RunPatches(cn))
                    t_cn = cn.config.get("addition_time_embed_dim")
                    t_unet = self.comps.unet.config.get("addition_time_embed_dim")
                    if hasattr(cn, "add_time_proj") and t_unet and t_cn != t_unet:
                        patches.set_attr(cn.add_time_proj, "num_channels", int(t_unet))  # single-file guess fixed
                    by_spec[handle.spec] = cn
                self._models.append(by_spec[handle.spec])
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> bool:
        self._models, self._hints = [], {}
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        return False

    def _hint(self, idx: int, cn, batch: int, h: int, w: int, guess: bool) -> torch.Tensor:
        scale = 2 ** (len(cn.config.conditioning_embedding_out_channels) - 1)
        key = (idx, batch, h, w)
        if key not in self._hints:
            p = next(cn.parameters())
            self._hints[key] = prepare_hint(self.entries[idx].image, h * scale, w * scale, batch, p.device, p.dtype,
                                            self.cfg, guess)
        return self._hints[key]

    def residuals(self, latent_model_input: torch.Tensor, t, encoder_hidden_states: torch.Tensor, step_index: int,
                  total_steps: int, added_cond_kwargs: dict | None = None):
        if self._stack is None:
            raise RuntimeError("ControlNetRun.residuals() is used inside `with ControlNetRun(...) as run:`")
        down = mid = None
        out_dtype = latent_model_input.dtype
        batch = latent_model_input.shape[0] // (2 if self.cfg else 1)
        h, w = latent_model_input.shape[-2:]
        for idx, (e, cn) in enumerate(zip(self.entries, self._models)):
            if not is_active(e, step_index, total_steps) or e.strength == 0:
                continue
            p = next(cn.parameters())
            guess = bool(cn.config.get("global_pool_conditions", False))
            x, ehs, added = latent_model_input, encoder_hidden_states, added_cond_kwargs
            x = x[:, : cn.config.in_channels]  # inpainting UNets: the ControlNet sees the latents only
            if guess and self.cfg:  # diffusers' guess mode: the conditional half only, zeros for the other
                x, ehs = x.chunk(2)[1], ehs.chunk(2)[1]
                added = {k: v.chunk(2)[1] for k, v in added.items()} if added else added
            if added:
                added = {k: v.to(device=p.device, dtype=p.dtype) if v.is_floating_point() else v.to(p.device)
                         for k, v in added.items()}
            tt = t.to(p.device) if torch.is_tensor(t) else t
            d, m = cn(x.to(device=p.device, dtype=p.dtype), tt,
                      encoder_hidden_states=ehs.to(device=p.device, dtype=p.dtype),
                      controlnet_cond=self._hint(idx, cn, batch, h, w, guess), conditioning_scale=float(e.strength),
                      added_cond_kwargs=added, guess_mode=guess, return_dict=False)
            if guess and self.cfg:
                d = [torch.cat([torch.zeros_like(r), r]) for r in d]
                m = torch.cat([torch.zeros_like(m), m])
            d = [r.to(device=latent_model_input.device, dtype=out_dtype) for r in d]
            m = m.to(device=latent_model_input.device, dtype=out_dtype)
            if down is None:
                down, mid = d, m
            else:
                down = [a + b for a, b in zip(down, d)]
                mid = mid + m
        return down, mid


def controlnet_residuals(entries, comps, latent_model_input, t, encoder_hidden_states, step_index: int,
                         total_steps: int, added_cond_kwargs=None, *, do_classifier_free_guidance: bool = False):
    """One step's summed ControlNet residuals (down list, mid) or (None, None); see ControlNetRun.

    A convenience for a single call: it pins the models and prepares the hints each time. A sampler
    should hold one `ControlNetRun` for the whole run instead.
    """
    with ControlNetRun(entries, comps, do_classifier_free_guidance) as run:
        return run.residuals(latent_model_input, t, encoder_hidden_states, step_index, total_steps, added_cond_kwargs)


def describe(handle: ControlNetHandle) -> str:
    return f"{handle.name} ({ARCH_NAMES.get(handle.arch, handle.arch)} ControlNet)"


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if identify.has_prefix(keys, "control_model.", "input_hint_block.", "controlnet_cond_embedding.", "zero_convs.",
                           "controlnet_down_blocks."):
        return f"a ControlNet: {identify.goes('controlnet')}"
    return None


identify.register("controlnet", _what_file, order=30, place=identify.Place("controlnet", "VisionKitControlNetLoader"))
