"""InstantID during a sampler run: the face embedding → image-prompt tokens, and the sampler's hook.

The hook (as InstantID's reference pipeline, see models/sd/instantid.py): the tokens feed IP-Adapter attention
processors on the UNet's cross-attention layers, installed for the run only (models/sd/ip_attention.py), and are the
IdentityNet's encoder_hidden_states (not the prompt); the IdentityNet runs through controlnet.ControlNetRun with the
keypoint image as its hint, so it follows the ControlNet start/end window, hint resizing and CFG halves. The IP
attention uses the same window (0 outside it).
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from ..core.cache import get_cache
from .controlnet import ControlNetRun
from .instantid import InstantIDAdapter, InstantIDError, InstantIDHandle
from .ip_attention import (
    IPAttentionError,
    IPTerm,
    install_ip_attention,
    ip_layers_from_state_dict,
)
from .run_hooks import RunHook
from .types import ControlEntry


def face_tokens(adapter: InstantIDAdapter, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(resampler(embedding), resampler(zeros)), each (1, tokens, width) in the adapter's device and dtype.

    InstantID's pipeline runs the resampler on [zeros, embedding] under CFG: the zeros' tokens are the
    negative half's image prompt (for the IP attention and the IdentityNet alike).
    """
    p = next(adapter.resampler.parameters())
    emb = torch.as_tensor(embedding).reshape(1, 1, -1).to(p.device, p.dtype)
    with torch.inference_mode():
        return adapter.resampler(emb), adapter.resampler(torch.zeros_like(emb))


class _Face:
    """One InstantID entry during a run: its tokens, its IdentityNet run."""

    def __init__(self, entry, tokens, cn_run):
        self.entry, self.tokens, self.cn_run = entry, tokens, cn_run


class InstantIDHook(RunHook):
    """The sampler's hook for "instantid" entries (models/sd/run_hooks.py): pins the adapters, installs the IP
    attention for the run and adds the IdentityNet residuals at each step (see the module docstring)."""

    def __init__(self, entries):
        super().__init__(entries)
        self.faces: list[_Face] = []
        self.ctl = None

    def enter(self, run, patches, stack: ExitStack) -> None:
        unet = run.comps.unet
        if run.comps.arch != "sdxl":
            raise InstantIDError("InstantID is SDXL only; load an SDXL pipeline")
        width = int(unet.config.cross_attention_dim)
        cache = get_cache()
        terms = []
        for e in self.entries:
            handle: InstantIDHandle = e.model
            adapter: InstantIDAdapter = stack.enter_context(cache.use(handle.adapter))
            if adapter.shape.output_dim != width:
                raise InstantIDError(f"the InstantID adapter {handle.name} makes {adapter.shape.output_dim}-wide "
                                     f"tokens but this pipeline's UNet takes {width}-wide ones: it was made for "
                                     "another model")
            if e.image.shape[0] not in (1, run.batch):
                raise InstantIDError(f"InstantID has {e.image.shape[0]} keypoint images (one per pose image) but "
                                     f"{run.batch} images are generated: give one pose image, or one per image")
            cond, uncond = face_tokens(adapter, e.option("embedding"))
            try:
                weights = ip_layers_from_state_dict(unet, adapter.ip_state_dict(), f"InstantID adapter {handle.name}")
            except IPAttentionError as ex:
                raise InstantIDError(str(ex)) from ex
            terms.append(IPTerm(weights=weights, cond=cond, uncond=uncond, scale=float(e.option("ip_weight", 1.0)),
                                start=e.start, end=e.end, name=f"InstantID {handle.name}"))
            tokens = torch.cat([uncond, cond]) if run.cfg else cond
            tokens = tokens.repeat_interleave(run.batch, dim=0).to(run.device, run.dtype)
            cn_entry = ControlEntry(kind="controlnet", model=handle.controlnet, arch=handle.arch, image=e.image,
                                    strength=e.strength, start=e.start, end=e.end)
            cn_run = stack.enter_context(ControlNetRun([cn_entry], run.comps, do_classifier_free_guidance=run.cfg))
            self.faces.append(_Face(e, tokens, cn_run))
        self.ctl = install_ip_attention(patches, unet, terms, batch=run.batch, cfg=run.cfg)

    def unet_kwargs(self, step) -> dict:
        self.ctl.set_step(step.step_index, step.total_steps, step.latent_model_input.shape[-2:])
        down = mid = None
        for f in self.faces:
            d, m = f.cn_run.residuals(step.latent_model_input, step.timestep, f.tokens, step.step_index,
                                      step.total_steps, step.added_cond_kwargs)
            if d is None:
                continue
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def describe(handle: InstantIDHandle) -> str:
    s = handle.shape
    return (f"{handle.name} (InstantID, {s.num_queries} tokens from {s.embedding_dim}-d face embeddings) + "
            f"{handle.controlnet.name} (IdentityNet)")
