"""IP-Adapter during a sampler run: reference images → image-prompt tokens, the style / composition modes, and the
sampler's hook that installs the IP attention for the run (models/sd/ip_attention.py).

Tokens (once per run, as diffusers' `encode_image` + `prepare_ip_adapter_image_embeds` + the UNet's image
projection do): the reference images are quantised to 8 bits and preprocessed by transformers'
CLIPImageProcessor with the encoder's image size (shortest side resized bicubic, centre crop, CLIP mean/std),
exactly as diffusers' pipeline does for PIL images. base: image_embeds → projection; unconditional tokens =
projection of zeros. plus / full-face: hidden_states[-2] → projection; unconditional = the projection of the
hidden states of an all-zero (normalised) pixel tensor. Several reference images: "concatenate" joins each
image's tokens (diffusers' behaviour for a list of images), "average" averages the encoder outputs first
(one image's worth of tokens).

Modes (InstantStyle block targeting; diffusers' set_ip_adapter_scale names): SDXL style = up_blocks.0.attentions.1,
composition = down_blocks.2.attentions.1 (InstantStyle's paper). SD1.5: style = up_blocks.1, composition =
down_blocks.2 (all their attentions), InstantStyle's experimental infer_style_sd15.py choice; its README
notes SD1.5 separates style less cleanly than SDXL.
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from ..core.cache import get_cache
from ..core.imageops import check_image
from .ip_adapter import IPAdapterError, IPAdapterHandle, IPAdapterModel
from .ip_attention import (
    IPAttentionError,
    IPTerm,
    install_ip_attention,
    ip_layers_from_state_dict,
)
from .run_hooks import RunHook
from .types import IPADAPTER_TYPE

MODES = ("standard", "style only", "composition only")
COMBINE = ("average", "concatenate")
TARGETS = {("sdxl", "style only"): ("up_blocks.0.attentions.1",),
           ("sdxl", "composition only"): ("down_blocks.2.attentions.1",),
           ("sd15", "style only"): ("up_blocks.1",),
           ("sd15", "composition only"): ("down_blocks.2",)}


def preprocess(images, image_size: int) -> torch.Tensor:
    """IMAGE (N, H, W, 3) 0..1 → CLIP pixel values (N, 3, S, S), as diffusers' pipeline does for PIL images."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor

    img = check_image(images, "reference image")[..., :3]
    arr = (img.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pil = [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
    proc = CLIPImageProcessor(size=int(image_size), crop_size=int(image_size))
    return proc(pil, return_tensors="pt").pixel_values


@torch.no_grad()
def image_tokens(model: IPAdapterModel, encoder, images, combine: str = "average"):
    """(cond tokens (1, T, C), uncond tokens (1, T, C)) for the reference images (diffusers' encode_image)."""
    if combine not in COMBINE:
        raise IPAdapterError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}")
    p = next(encoder.parameters())
    pixels = preprocess(images, encoder.config.image_size).to(device=p.device, dtype=p.dtype)
    if model.info.uses_hidden_states:
        emb = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        zero = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    else:
        emb = encoder(pixels).image_embeds
        zero = torch.zeros_like(emb)
    if combine == "average":
        emb, zero = emb.mean(0, keepdim=True), zero.mean(0, keepdim=True)
    q = next(model.image_proj.parameters())
    cond = model.image_proj(emb.to(q.device, q.dtype))
    uncond = model.image_proj(zero.to(q.device, q.dtype))
    return cond.reshape(1, -1, cond.shape[-1]), uncond.reshape(1, -1, uncond.shape[-1])


def target_blocks(mode: str, arch: str):
    """Processor-name prefixes a mode acts on (None = every cross-attention layer)."""
    if mode in (None, "", "standard"):
        return None
    try:
        return TARGETS[(arch, mode)]
    except KeyError as ex:
        raise IPAdapterError(f"mode must be one of {', '.join(MODES)}, not {mode!r}") from ex


# ------------------------------------------------------------------ the sampler's run hook
class IPAdapterHook(RunHook):
    """The "ipadapter" entries of a VK_CONTROL chain for one sampler run (models/sd/run_hooks.py)."""

    def __init__(self, entries):
        super().__init__(entries)
        self.ctl = None

    def enter(self, run, patches, stack: ExitStack) -> None:
        unet = run.comps.unet
        cache = get_cache()
        terms = []
        for e in self.entries:
            h = e.model
            if not isinstance(h, IPAdapterHandle):
                raise IPAdapterError(f"an IP-Adapter entry's model must come from VisionKit Load IP-Adapter "
                                     f"({IPADAPTER_TYPE}), got {type(h).__name__}")
            model = stack.enter_context(cache.use(h.ipadapter))
            width = int(unet.config.cross_attention_dim)
            if model.info.cross_dim != width:
                raise IPAdapterError(f"{h.name} makes {model.info.cross_dim}-wide image tokens but the pipeline's UNet "
                                     f"takes {width}-wide prompt embeddings: it was made for another model")
            with cache.use(h.clip_vision) as encoder:
                cond, uncond = image_tokens(model, encoder, e.image, e.option("combine", "average"))
            try:
                weights = ip_layers_from_state_dict(unet, model.ip_state_dict(), f"IP-Adapter {h.name}")
            except IPAttentionError as ex:
                raise IPAdapterError(str(ex)) from ex
            mode = e.option("mode", "standard")
            terms.append(IPTerm(weights=weights, cond=cond, uncond=uncond, scale=float(e.strength), start=e.start,
                                end=e.end, mask=e.mask, blocks=target_blocks(mode, h.arch),
                                name=f"IP-Adapter {h.name}"))
        try:
            self.ctl = install_ip_attention(patches, unet, terms, batch=run.batch, cfg=run.cfg)
        except IPAttentionError as ex:
            hint = ": its blocks do not exist in this model, use mode 'standard'" if "none of the blocks" in str(ex) \
                else ""
            raise IPAdapterError(f"{ex}{hint}") from ex

    def unet_kwargs(self, step) -> dict:
        self.ctl.set_step(step.step_index, step.total_steps, tuple(step.latent_model_input.shape[-2:]))
        return {}
