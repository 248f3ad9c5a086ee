"""The VisionKit sampler engine: VK_PIPELINE + VK_CONDITIONING (+ VK_CONTROL, IMAGE, MASK) → IMAGE.

One run, as diffusers' pipelines do it (so results equal them for the same seed, scheduler and inputs):
- text-to-image: StableDiffusion[XL]Pipeline; image-to-image (IMAGE, denoise = strength):
  StableDiffusionImg2ImgPipeline; inpainting (IMAGE + MASK): StableDiffusionInpaintPipeline, which runs a 9-channel
  inpainting UNet on [latents, mask, masked-image latents] and, with a normal 4-channel UNet, blends the latents
  with the original's latents (noised to the next timestep) outside the mask after every step. The MASK (1 =
  repaint) is binarised at 0.5 as diffusers does; masked pixels are left out of the masked image.
  An inpainting UNet without a MASK repaints everything (mask of ones; A1111's convention), without an IMAGE it
  starts from a gray image.
- Random numbers: one torch.Generator on the CPU seeded with `seed` (0..2^64-1), drawn in diffusers' order (VAE
  posterior samples of the image encodes, the initial noise, then the scheduler's per-step noise, e.g. LCM's), so
  the same seed gives the same image on any device. A batch uses one generator for all its images.
- Classifier-free guidance when guidance > 1 and the UNet has no guidance embedding (time_cond_proj_dim); LCM
  checkpoints with one get w = guidance - 1 embedded instead (diffusers' rule); guidance ≤ 1: no negative pass.
  Positive and negative embeddings of different lengths are repeated to a common length.
- SDXL: added_cond_kwargs text_embeds = pooled, time_ids = Conditioning.add_time_ids; the VAE runs in fp32 when
  it is fp16 and its config says force_upcast (a run-local fp32 copy: the cached VAE is not touched).
- Images whose size is not a multiple of 8 are padded (edge pixels repeated) and the output cropped back.
- ControlNet entries act at step i of n when start <= i/n < end (sd_controlnet.is_active, ComfyUI-like); diffusers'
  ControlNet pipelines keep one while start <= i/n and (i+1)/n <= end: the same steps when start and end fall on
  step boundaries (e.g. 0.25 / 0.75 with 4 steps), otherwise diffusers drops the step that straddles `end`.

Per-run patches: everything that changes the UNet for the run goes through one models.core.patching.RunPatches block
around the denoising loop, which holds the UNet's lock for the run. Run hooks' patches are undone when the run
ends, fails or is cancelled; the handle's LoRAs (sd_lora.apply_lora_unet) are patched in place once per stack and
kept, recorded, until a run asks for another stack (no LoRA included): other runs never see them (sd_lora_apply).

Run hooks (extension point): VK_CONTROL entries are grouped by kind and each kind's registered factory builds a
`RunHook` for the run. A hook may pin models and patch the UNet in `enter(run, patches, stack)` (e.g. IP-Adapter's
attention processors via `patches.set_attr` / `patches.add`) and add keyword arguments to every UNet call in
`unet_kwargs(step)` (ControlNet residuals, `added_cond_kwargs` such as image_embeds, `cross_attention_kwargs`).
"controlnet" is registered here; "ipadapter" (models/sd/ip_adapter.py) and "instantid" (models/sd/instantid.py) are
registered as "module:attribute" strings, imported on first use so the pack's import stays cheap.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import host
from ..core.imageops import check_image, match_mask
from ..core.patching import RunPatches
from .memory import check_memory, interruptible
from .pipeline import use_pipeline
from .prompt import repeat_to_common_length
from .schedulers import SCHEDULER_NAMES, make_scheduler, schedule, step_kwargs
from .types import (
    ARCH_NAMES,
    KIND_NAMES,
    Conditioning,
    GenerationError,
    PipelineHandle,
    check_chain_arch,
)

log = logging.getLogger("visionkit")

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
MAX_STEPS = 100
MIN_SIZE = 16  # ComfyUI's Empty Latent Image minimum
MAX_SIZE = 16384
MAX_BATCH = 64


# ================================================================ settings and checks
@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 4
    guidance: float = 1.0
    seed: int = 0
    scheduler: str = "lcm"
    denoise: float = 1.0  # image-to-image / inpainting only
    width: int = 512  # text-to-image only (an IMAGE sets the size)
    height: int = 512
    batch_size: int = 1


def _number(name, value, lo, hi, whole=True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number, not {value!r}"
    if not math.isfinite(v):
        return f"{name} must be a finite number, not {value!r}"
    if whole and not v.is_integer():
        return f"{name} must be a whole number, not {value!r}"
    if whole:
        v = value if isinstance(value, int) else int(v)  # exact for seeds up to 2^64-1
    if not lo <= v <= hi:
        return f"{name} {value} is outside {lo}..{hi}: set it within that range"
    return None


def check_settings(steps=None, guidance=None, seed=None, scheduler=None, denoise=None, width=None, height=None,
                   batch_size=None) -> str | None:
    """The first problem with these settings, in words (None = fine). Unset (None) values are not checked."""
    if width is not None or height is not None:
        for name, v in (("width", width), ("height", height)):
            if v is None:
                continue
            msg = _number(name, v, MIN_SIZE, MAX_SIZE)
            if msg:
                return msg + " pixels"
            if int(v) % 8:
                lo = int(v) // 8 * 8
                return (f"{name} {v} is not a multiple of 8 (Stable Diffusion works on 8×8-pixel latents): use "
                        f"{max(lo, MIN_SIZE)} or {lo + 8}")
    checks = ((steps, lambda: _number("steps", steps, 1, MAX_STEPS)),
              (guidance, lambda: _number("guidance", guidance, 0.0, 100.0, whole=False)),
              (seed, lambda: _number("seed", seed, 0, MAX_SEED)),
              (batch_size, lambda: _number("batch_size", batch_size, 1, MAX_BATCH)),
              (denoise, lambda: _number("denoise", denoise, 0.0, 1.0, whole=False)))
    for value, check in checks:
        msg = check() if value is not None else None
        if msg:
            if value is denoise:
                msg += " (0 keeps the image, 1 repaints it completely)"
            return msg
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        return f"scheduler {scheduler!r} is not one of: {', '.join(SCHEDULER_NAMES)}"
    return None


# ================================================================ run hooks (VK_CONTROL entries)
@dataclass
class StepInputs:
    """What a hook sees of one UNet call (after scale_model_input; [negative, positive] halves under CFG)."""

    latent_model_input: torch.Tensor  # the latent channels only (an inpainting UNet's mask channels excluded)
    timestep: Any
    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict | None
    step_index: int
    total_steps: int


class RunHook:
    """Per-run behaviour of the VK_CONTROL entries of one kind (see the module docstring)."""

    def __init__(self, entries):
        self.entries = list(entries)

    def enter(self, run: Run, patches: RunPatches, stack: ExitStack) -> None:
        """Set up for the run: pin models (stack.enter_context), patch the UNet through `patches`."""

    def unet_kwargs(self, step: StepInputs) -> dict:
        return {}


class ControlNetHook(RunHook):
    """ControlNet entries through models/sd/controlnet.py ControlNetRun (active between start and end, summed)."""

    def enter(self, run, patches, stack):
        from .controlnet import ControlNetRun

        self.cn = stack.enter_context(ControlNetRun(self.entries, run.comps, do_classifier_free_guidance=run.cfg))

    def unet_kwargs(self, step):
        down, mid = self.cn.residuals(step.latent_model_input, step.timestep, step.encoder_hidden_states,
                                      step.step_index, step.total_steps, step.added_cond_kwargs)
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


# a factory, or "module:attribute" of a factory in this package (imported when a chain first uses the kind)
RUN_HOOKS: dict[str, Callable[[list], RunHook] | str] = {"controlnet": ControlNetHook,
                                                          "ipadapter": "ip_adapter:IPAdapterHook",
                                                          "instantid": "instantid:InstantIDHook"}


def register_run_hook(kind: str, factory: Callable[[list], RunHook] | str) -> None:
    """Make the sampler apply VK_CONTROL entries of `kind` (factory(entries) → RunHook, or "module:attribute")."""
    RUN_HOOKS[kind] = factory


def _hook_factory(kind):
    factory = RUN_HOOKS.get(kind)
    if isinstance(factory, str):
        import importlib

        mod_name, _, attr = factory.partition(":")
        full = f"{__package__}.{mod_name}"
        try:
            factory = getattr(importlib.import_module(full), attr)
        except ModuleNotFoundError as ex:
            if ex.name != full:
                raise
            factory = None
        except AttributeError:
            factory = None
        if factory is not None:
            RUN_HOOKS[kind] = factory
    return factory


def build_hooks(chain) -> list[RunHook]:
    kinds: dict[str, list] = {}
    for e in chain or ():
        kind = getattr(e, "kind", None)
        if _hook_factory(kind) is None:
            what = KIND_NAMES.get(kind, repr(kind))
            raise GenerationError(f"{what} entries in the control chain are not available yet in the VisionKit sampler"
                                  f" (a later version applies them); remove the {what} node from the chain")
        kinds.setdefault(kind, []).append(e)
    return [RUN_HOOKS[k](entries) for k, entries in kinds.items()]


def _merge_kwargs(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if v is None:
            continue
        old = into.get(k)
        if old is None:
            into[k] = v
        elif k == "down_block_additional_residuals":
            into[k] = [a + b for a, b in zip(old, v)]
        elif k == "mid_block_additional_residual":
            into[k] = old + v
        elif isinstance(old, dict) and isinstance(v, dict):
            into[k] = {**old, **v}
        else:
            raise GenerationError(f"two kinds of control-chain entries both set the UNet's {k}; they cannot be "
                                  "combined")


# ================================================================ the run
@dataclass
class Run:
    """The state of one sampling run (what hooks may read)."""

    comps: Any
    handle: PipelineHandle
    settings: SamplerSettings
    device: Any
    dtype: Any
    batch: int
    cfg: bool
    generator: torch.Generator
    scheduler: Any = None
    vae: Any = None  # the VAE this run encodes/decodes with (an fp32 copy for SDXL force_upcast)
    denoise: float = 1.0  # the strength in effect (1 for text-to-image)
    extras: dict = field(default_factory=dict)  # free space for hooks


def _vae_for_run(comps):
    vae = comps.vae
    if comps.arch == "sdxl" and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        return copy.deepcopy(vae).to(torch.float32)  # SDXL's VAE overflows in fp16; the cached one stays fp16
    return vae


def _latent_stats(vae, device, dtype):
    c = vae.config
    mean, std = getattr(c, "latents_mean", None), getattr(c, "latents_std", None)
    if mean is None or std is None:
        return None
    n = len(mean)
    return (torch.tensor(mean).view(1, n, 1, 1).to(device, dtype), torch.tensor(std).view(1, n, 1, 1).to(device, dtype))


def encode_pixels(run: Run, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in -1..1 → scaled latents, sampling the VAE posterior with the run's generator (diffusers)."""
    vae = run.vae
    p = next(vae.parameters())
    lat = vae.encode(pixels.to(p.device, p.dtype)).latent_dist.sample(run.generator)
    stats = _latent_stats(vae, lat.device, lat.dtype)
    sf = vae.config.scaling_factor
    lat = (lat - stats[0]) * sf / stats[1] if stats else sf * lat
    return lat.to(run.device, run.dtype)


def decode_latents(run: Run, latents: torch.Tensor) -> torch.Tensor:
    """Latents → IMAGE (B, H, W, 3) float32 0..1 on the CPU, one image at a time."""
    vae = run.vae
    p = next(vae.parameters())
    lat = latents.to(p.device, p.dtype)
    stats = _latent_stats(vae, p.device, p.dtype)
    sf = vae.config.scaling_factor
    lat = lat * stats[1] / sf + stats[0] if stats else lat / sf
    out = []
    for i in range(lat.shape[0]):
        host.throw_if_cancelled()
        x = vae.decode(lat[i:i + 1], return_dict=False)[0]
        out.append((x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
    return torch.cat(out).contiguous()


def guidance_embedding(w: torch.Tensor, dim: int, dtype=torch.float32) -> torch.Tensor:
    """LCM's guidance-scale embedding (sinusoidal, of w·1000), as diffusers' pipelines compute it."""
    w = w * 1000.0
    half = dim // 2
    emb = torch.log(torch.tensor(10000.0)) / (half - 1)
    emb = torch.exp(torch.arange(half, dtype=dtype) * -emb)
    emb = w.to(dtype)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def _text_inputs(run: Run, cond: Conditioning):
    """(encoder_hidden_states, added_cond_kwargs or None) for the UNet, [negative, positive] under CFG."""
    unet, b, dev, dt = run.comps.unet, run.batch, run.device, run.dtype
    width = int(unet.config.cross_attention_dim)
    pos, neg = cond.prompt_embeds, cond.negative_prompt_embeds
    if pos.shape[-1] != width or neg.shape[-1] != width:
        raise GenerationError(f"the conditioning is {pos.shape[-1]}-wide but this pipeline's UNet expects {width}-wide "
                              "prompt embeddings: encode the prompt with this pipeline (Prompt Encode)")
    if run.cfg:
        pos, neg = repeat_to_common_length(pos, neg)
    pos = pos.to(dev, dt).repeat(b, 1, 1)
    ehs = torch.cat([neg.to(dev, dt).repeat(b, 1, 1), pos]) if run.cfg else pos
    if run.comps.arch != "sdxl":
        return ehs, None
    if cond.pooled is None or len(cond.add_time_ids) != 6:
        raise GenerationError("this SDXL conditioning has no pooled embedding / size conditioning; encode the prompt "
                              "with VisionKit Prompt Encode on the SDXL pipeline")
    want = unet.add_embedding.linear_1.in_features
    got = unet.config.addition_time_embed_dim * 6 + cond.pooled.shape[-1]
    if want != got:
        raise GenerationError(f"the conditioning's pooled embedding is {cond.pooled.shape[-1]}-wide, which does not "
                              "fit this SDXL UNet: encode the prompt with this pipeline")
    text = cond.pooled.to(dev, dt).repeat(b, 1)
    time = torch.tensor([list(cond.add_time_ids)], dtype=dt, device=dev).repeat(b, 1)
    if run.cfg:
        neg_ids = cond.negative_add_time_ids or cond.add_time_ids
        text = torch.cat([cond.negative_pooled.to(dev, dt).repeat(b, 1), text])
        time = torch.cat([torch.tensor([list(neg_ids)], dtype=dt, device=dev).repeat(b, 1), time])
    return ehs, {"text_embeds": text, "time_ids": time}


def _prepare_image(image, mask, factor: int = 8):
    """(pixels (B, 3, H', W') in -1..1, binary mask (B, 1, H', W') or None, original (H, W)), padded to `factor`."""
    img = check_image(image, "image")[..., :3]
    m = match_mask(mask, img, "mask", "image") if mask is not None else None
    h, w = img.shape[1:3]
    ph, pw = (-h) % factor, (-w) % factor
    x = img.permute(0, 3, 1, 2).contiguous()
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    x = 2.0 * x - 1.0
    if m is not None:
        m = (m.unsqueeze(1) >= 0.5).float()  # diffusers' mask processor binarises at 0.5
        if ph or pw:
            m = torch.nn.functional.pad(m, (0, pw, 0, ph))  # padding is kept, not repainted
    return x, m, (h, w)


def _init_latents(run: Run, pixels, mask, timesteps, shape):
    """Initial latents and the inpainting inputs, drawing from the generator in diffusers' order.

    Returns (latents, inpaint) where inpaint is None or a dict: mask_latent (B,1,h,w), masked (B,C,h,w) latents for
    9-channel UNets, image_latents + noise for 4-channel blending.
    """
    from diffusers.utils.torch_utils import randn_tensor

    sched, g, dev, dt = run.scheduler, run.generator, run.device, run.dtype
    if pixels is None:  # text-to-image
        return randn_tensor(shape, generator=g, device=dev, dtype=dt) * sched.init_noise_sigma, None
    reps = shape[0] // pixels.shape[0]
    latent_t = timesteps[:1].repeat(shape[0])
    if mask is None:  # image-to-image (StableDiffusionImg2ImgPipeline.prepare_latents)
        init = encode_pixels(run, pixels)
        init = torch.cat([init] * reps) if reps > 1 else init
        noise = randn_tensor(init.shape, generator=g, device=dev, dtype=dt)
        return sched.add_noise(init, noise, latent_t), None
    # inpainting (StableDiffusionInpaintPipeline.prepare_latents / prepare_mask_latents)
    nine = int(run.comps.unet.config.in_channels) == 9
    strength_max = run.denoise == 1.0
    image_latents = None
    if not nine or not strength_max:
        image_latents = encode_pixels(run, pixels).repeat(reps, 1, 1, 1)
    noise = randn_tensor(shape, generator=g, device=dev, dtype=dt)
    latents = noise * sched.init_noise_sigma if strength_max else sched.add_noise(image_latents, noise, latent_t)
    masked_pixels = pixels * (mask < 0.5)
    if nine:
        masked = encode_pixels(run, masked_pixels)
    else:  # diffusers encodes the masked image here too (unused by a 4-channel UNet): the same draw, no encode
        p = next(run.vae.parameters())
        randn_tensor((masked_pixels.shape[0], shape[1]) + tuple(shape[2:]), generator=g, device=p.device, dtype=p.dtype)
        masked = None
    mask_l = torch.nn.functional.interpolate(mask, size=tuple(shape[2:])).to(dev, dt).repeat(reps, 1, 1, 1)
    inpaint = {"mask": mask_l, "nine": nine, "image_latents": image_latents, "noise": noise,
               "masked": masked.repeat(reps, 1, 1, 1) if masked is not None else None}
    return latents, inpaint


def _denoise(run: Run, cond, chain, latents, timesteps, inpaint, progress_cb):
    comps, sched = run.comps, run.scheduler
    unet = comps.unet
    ehs, added = _text_inputs(run, cond)
    tcond = None
    if unet.config.time_cond_proj_dim is not None:
        w = torch.tensor(float(run.settings.guidance) - 1).repeat(run.batch)
        tcond = guidance_embedding(w, unet.config.time_cond_proj_dim).to(run.device, run.dtype)
    skw = step_kwargs(sched, run.generator)
    hooks = build_hooks(chain)
    nine = inpaint is not None and inpaint["nine"]
    if nine:
        mask_in = torch.cat([inpaint["mask"]] * 2) if run.cfg else inpaint["mask"]
        masked_in = torch.cat([inpaint["masked"]] * 2) if run.cfg else inpaint["masked"]
    guidance = float(run.settings.guidance)
    progress = host.Progress(len(timesteps), progress_cb)
    with RunPatches(unet) as patches, ExitStack() as stack:
        from .lora import apply_lora_unet

        apply_lora_unet(patches, comps, run.handle)
        for hook in hooks:
            hook.enter(run, patches, stack)
        stack.enter_context(interruptible(unet))  # Cancel is honoured inside a step, not only between steps
        for i, t in enumerate(timesteps):
            host.throw_if_cancelled()
            lmi = torch.cat([latents] * 2) if run.cfg else latents
            lmi = sched.scale_model_input(lmi, t)
            kwargs = {"encoder_hidden_states": ehs, "timestep_cond": tcond, "added_cond_kwargs": added}
            step = StepInputs(lmi, t, ehs, added, i, len(timesteps))
            for hook in hooks:
                _merge_kwargs(kwargs, hook.unet_kwargs(step))
            x = torch.cat([lmi, mask_in, masked_in], dim=1) if nine else lmi
            noise_pred = unet(x, t, return_dict=False, **kwargs)[0]
            if run.cfg:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + guidance * (text - uncond)
            latents = sched.step(noise_pred, t, latents, **skw, return_dict=False)[0]
            if inpaint is not None and not nine:  # keep the unmasked region from the (noised) original
                proper = inpaint["image_latents"]
                if i < len(timesteps) - 1:
                    proper = sched.add_noise(proper, inpaint["noise"], torch.tensor([timesteps[i + 1]]))
                latents = (1 - inpaint["mask"]) * proper + inpaint["mask"] * latents
            progress.update()
    return latents


def generate(handle: PipelineHandle, cond: Conditioning, settings: SamplerSettings, control=(), image=None,
             mask=None, progress: Callable[[int, int], None] | None = None, return_latents: bool = False):
    """Run the sampler; IMAGE (B, H, W, 3) float32 0..1 on the CPU (and the final latents when asked)."""
    if not isinstance(handle, PipelineHandle):
        raise GenerationError(f"'pipeline' must come from VisionKit Load Pipeline (VK_PIPELINE), got "
                              f"{type(handle).__name__}")
    if not isinstance(cond, Conditioning):
        raise GenerationError(f"'conditioning' must come from VisionKit Prompt Encode (VK_CONDITIONING), got "
                              f"{type(cond).__name__}")
    s = settings
    msg = check_settings(s.steps, s.guidance, s.seed, s.scheduler, s.denoise,
                         None if image is not None else s.width, None if image is not None else s.height, s.batch_size)
    if msg:
        raise GenerationError(msg)
    if cond.arch != handle.arch:
        raise GenerationError(f"this conditioning was encoded for {ARCH_NAMES.get(cond.arch, cond.arch)}, the pipeline "
                              f"is {ARCH_NAMES.get(handle.arch, handle.arch)}: encode the prompt with this pipeline")
    chain = tuple(control or ())
    check_chain_arch(chain, handle.arch)
    build_hooks(chain)  # unsupported kinds fail before anything loads
    if mask is not None and image is None:
        raise GenerationError("a MASK needs an IMAGE to inpaint: connect the image the mask belongs to")
    pixels = mask_px = None
    out_hw = (int(s.height), int(s.width))
    if image is not None:
        pixels, mask_px, out_hw = _prepare_image(image, mask)
    with use_pipeline(handle) as comps, torch.inference_mode():
        unet = comps.unet
        p = next(unet.parameters())
        factor = 2 ** (len(comps.vae.config.block_out_channels) - 1)
        blank = None
        if int(unet.config.in_channels) == 9 and pixels is None:  # inpainting UNet, text-to-image: gray, all repainted
            blank = pixels = torch.zeros(1, 3, out_hw[0], out_hw[1])
        if int(unet.config.in_channels) == 9 and mask_px is None:
            mask_px = torch.ones(pixels.shape[0], 1, *pixels.shape[2:])
        b_img = pixels.shape[0] if pixels is not None else 1
        hh, ww = pixels.shape[2:] if pixels is not None else out_hw
        batch = b_img * int(s.batch_size)
        cfg = float(s.guidance) > 1.0 and unet.config.time_cond_proj_dim is None
        check_memory(comps, p.device, p.dtype, hh, ww, batch, cfg, next(comps.vae.parameters()).dtype)
        run = Run(comps=comps, handle=handle, settings=s, device=p.device, dtype=p.dtype, batch=batch, cfg=cfg,
                  generator=torch.Generator("cpu").manual_seed(int(s.seed)))
        run.scheduler = make_scheduler(s.scheduler, comps.scheduler_config, comps.prediction)
        run.vae = _vae_for_run(comps)
        run.denoise = 1.0 if pixels is None or blank is not None else float(s.denoise)
        timesteps, _n = schedule(run.scheduler, s.steps, run.device, None if pixels is None else run.denoise)
        shape = (batch, int(comps.vae.config.latent_channels), hh // factor, ww // factor)
        latents, inpaint = _init_latents(run, pixels, mask_px, timesteps, shape)
        latents = _denoise(run, cond, chain, latents, timesteps, inpaint, progress)
        host.throw_if_cancelled()
        with interruptible(run.vae):
            images = decode_latents(run, latents)
    images = images[:, :out_hw[0], :out_hw[1]].contiguous()
    return (images, latents.float().cpu()) if return_latents else images
