"""SD1.5 / SDXL ControlNets: loading (offline, config from the weights), hint images, per-step residuals.

Reading the files (layouts, LDM conversion, config from the weights): models/sd/controlnet_files.py.
VK_CONTROLNET_MODEL is `ControlNetHandle` (spec + arch + name); `VisionKitControlNetApply` appends a
`ControlEntry(kind="controlnet", model=handle, ...)` to the VK_CONTROL chain; the sampler applies the chain's
ControlNets through `ControlNetHook`.

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

import os
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from ..core import identify
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.imageops import check_image
from ..core.patching import RunPatches
from .controlnet_files import ControlNetError, build_controlnet, read_controlnet
from .pipeline import torch_dtype
from .run_hooks import RunHook
from .types import arch_mismatch, check_chain_arch

KIND = "sd_controlnet"


@dataclass(frozen=True)
class ControlNetHandle:
    """VK_CONTROLNET_MODEL: the ControlNet file through the cache, and its architecture."""

    spec: ModelSpec
    arch: str  # "sd15" | "sdxl"
    name: str = ""


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path.rstrip(os.sep))
    cfg, sd, arch, layout = read_controlnet(spec.path)
    model = build_controlnet(cfg, sd, name)
    model.eval().requires_grad_(False).to(device=device)
    dtype = torch_dtype(spec.dtype, device)
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


class ControlNetHook(RunHook):
    """The sampler's hook for "controlnet" entries: one ControlNetRun for the run, its residuals at every step."""

    def enter(self, run, patches, stack):
        self.cn = stack.enter_context(ControlNetRun(self.entries, run.comps, do_classifier_free_guidance=run.cfg))

    def unet_kwargs(self, step):
        down, mid = self.cn.residuals(step.latent_model_input, step.timestep, step.encoder_hidden_states,
                                      step.step_index, step.total_steps, step.added_cond_kwargs)
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if identify.has_prefix(keys, "control_model.", "input_hint_block.", "controlnet_cond_embedding.", "zero_convs.",
                           "controlnet_down_blocks."):
        return f"a ControlNet: {identify.goes('controlnet')}"
    return None


identify.register("controlnet", _what_file, order=30, place=identify.Place("controlnet", "VisionKitControlNetLoader"))
