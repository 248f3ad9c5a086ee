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
- ControlNet entries act at step i of n when start <= i/n < end (controlnet.is_active, ComfyUI-like); diffusers'
  ControlNet pipelines keep one while start <= i/n and (i+1)/n <= end: the same steps when start and end fall on
  step boundaries (e.g. 0.25 / 0.75 with 4 steps), otherwise diffusers drops the step that straddles `end`.

Per-run patches: everything that changes the UNet for the run goes through one models.core.patching.RunPatches block
around the denoising loop, which holds the UNet's lock for the run. Run hooks' patches are undone when the run
ends, fails or is cancelled; the handle's LoRAs (lora.apply_lora_unet) are patched in place once per stack and
kept, recorded, until a run asks for another stack (no LoRA included): other runs never see them (lora_apply).

VK_CONTROL entries are grouped by kind; RUN_HOOKS below names the hook that applies each kind during the run
(the protocol: models/sd/run_hooks.py). Settings and their limits: models/sd/sampler_settings.py.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from contextlib import ExitStack

import torch

from ..core import host
from ..core.imageops import check_image, match_mask
from ..core.patching import RunPatches
from . import lora
from .controlnet import ControlNetHook
from .instantid_run import InstantIDHook
from .ip_adapter_run import IPAdapterHook
from .memory import check_memory, interruptible
from .pipeline import use_pipeline
from .prompt import repeat_to_common_length
from .run_hooks import Run, RunHook, StepInputs, merge_unet_kwargs
from .sampler_settings import SamplerSettings, check_settings
from .schedulers import make_scheduler, schedule, step_kwargs
from .types import (
    ARCH_NAMES,
    CONDITIONING_TYPE,
    KIND_NAMES,
    PIPELINE_TYPE,
    Conditioning,
    GenerationError,
    PipelineHandle,
    check_chain_arch,
)

log = logging.getLogger("visionkit")

# the VK_CONTROL kinds the sampler applies, and the hook that applies each (models/sd/run_hooks.py)
RUN_HOOKS: dict[str, Callable[[list], RunHook]] = {"controlnet": ControlNetHook,
                                                   "ipadapter": IPAdapterHook,
                                                   "instantid": InstantIDHook}


def build_hooks(chain) -> list[RunHook]:
    """One hook per kind of entry in the chain, in the chain's order; an unknown kind is an error."""
    kinds: dict[str, list] = {}
    for e in chain or ():
        kind = getattr(e, "kind", None)
        if kind not in RUN_HOOKS:
            what = KIND_NAMES.get(kind, repr(kind))
            raise GenerationError(f"{what} entries in the control chain are not available in the VisionKit sampler (it "
                                  f"applies ControlNet, IP-Adapter and InstantID entries); remove the {what} node from "
                                  "the chain")
        kinds.setdefault(kind, []).append(e)
    return [RUN_HOOKS[k](entries) for k, entries in kinds.items()]


# ================================================================ the run
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
        lora.apply_lora_unet(patches, comps, run.handle)
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
                merge_unet_kwargs(kwargs, hook.unet_kwargs(step))
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
        raise GenerationError(f"'pipeline' must come from VisionKit Load Pipeline ({PIPELINE_TYPE}), got "
                              f"{type(handle).__name__}")
    if not isinstance(cond, Conditioning):
        raise GenerationError(f"'conditioning' must come from VisionKit Prompt Encode ({CONDITIONING_TYPE}), got "
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
