"""Image-prompt attention on a cached UNet, for one run (IP-Adapter, InstantID): decoupled cross-attention.

IP-Adapter-style models add, in every cross-attention layer of the UNet, a second attention over image tokens
with their own key/value projections (to_k_ip / to_v_ip) and add its output, times a scale, to the text
attention's output (before to_out), as diffusers' IPAdapterAttnProcessor2_0 does:

    h = softmax(q k_text^T / sqrt(d)) v_text + sum over terms: scale_t(step) * mask_t * softmax(q k_t^T / sqrt(d)) v_t

This module installs such processors FOR ONE RUN through models.core.patching.RunPatches: the cached UNet's
attention modules get their processor swapped inside the run's `with RunPatches(unet) as patches:` block
and the original processor objects are put back when the block ends (also on errors and cancel). Nothing
is registered on the UNet as a parameter or buffer, so its state dict is never touched.

API (stable; the InstantID engine uses it too):

    terms = [IPTerm(weights=ip_layers_from_state_dict(unet, sd["ip_adapter"]),   # {processor name: (k_w, v_w)}
                    cond=tokens, uncond=uncond_tokens,                           # (1 or B, T, D) image tokens
                    scale=0.8, start=0.0, end=1.0,                               # or scale=callable(step, total)
                    mask=None,                                                   # (1 or B, H, W), 1 = act here
                    blocks=None)]                                                # processor-name prefixes; None = all
    ctl = install_ip_attention(patches, unet, terms, batch=B, cfg=True)
    for i, t in enumerate(timesteps):
        ctl.set_step(i, len(timesteps), latents.shape[-2:])   # e.g. from a sampler RunHook.unet_kwargs(step)
        unet(...)

- `weights` name the UNet's attention processors as `unet.attn_processors` does
  ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"); `ip_layers_from_state_dict` maps the
  numbered layout of IP-Adapter / InstantID files ("1.to_k_ip.weight", "3.to_k_ip.weight", ...: the index of
  the processor among ALL of the UNet's attention processors in order, self-attention included, so the
  cross-attention layers are 1, 3, 5, ...; diffusers' `_convert_ip_adapter_attn_to_diffusers` numbers them so).
- Tokens: under CFG the UNet batch is [negative × B, positive × B] (the sampler's order); the negative half
  sees `uncond`, the positive half `cond`. One token set (batch 1) is repeated over the B images.
- A term is active at step i of n when start <= i/n < end (the ControlNet rule, controlnet.is_active) and
  its scale is not 0; a callable scale(step, total) replaces scale/start/end. Inactive layers run the
  original processor unchanged.
- Masks: resized (bicubic, as diffusers' IPAdapterMaskProcessor.downsample) to each layer's latent grid; the
  grid is found from the latent size given to set_step (halved, rounding up, per UNet level) or, failing
  that, from the mask's aspect ratio as diffusers does. A mask batch of 1 applies to every image.
- Several terms on one layer add up (diffusers' multi-IP-Adapter); several `install_ip_attention` calls in
  one run (IP-Adapter and InstantID entries) add their terms to the same processors.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .types import GenerationError


class IPAttentionError(GenerationError):
    """Image-prompt weights that do not fit the pipeline's UNet; the message says which and why."""


@dataclass
class IPTerm:
    """One image prompt (one adapter's tokens) acting on a set of cross-attention layers."""

    weights: dict  # processor name -> (to_k_ip weight (inner, D), to_v_ip weight (inner, D))
    cond: torch.Tensor  # (1 or B, T, D) image tokens for the positive half
    uncond: torch.Tensor | None = None  # same shape; the CFG negative half (required when cfg)
    scale: float | Callable[[int, int], float] = 1.0
    start: float = 0.0
    end: float = 1.0
    mask: torch.Tensor | None = None  # (1 or B, H, W) in output-image space, 1 = the tokens act there
    blocks: Sequence[str] | None = None  # processor-name prefixes ("up_blocks.0.attentions.1"); None = all
    name: str = "image prompt"

    def scale_at(self, step: int, total: int) -> float:
        if callable(self.scale):
            return float(self.scale(step, total))
        frac = step / max(int(total), 1)
        return float(self.scale) if self.start <= frac < self.end else 0.0

    def acts_on(self, proc_name: str) -> bool:
        if self.blocks is None:
            return True
        return any(proc_name == b or proc_name.startswith(b.rstrip(".") + ".") for b in self.blocks)


def cross_attention_names(unet) -> list[str]:
    """The UNet's cross-attention processor names, in `attn_processors` order (what IP weights attach to)."""
    return [n for n in unet.attn_processors if not n.endswith("attn1.processor") and "motion_modules" not in n]


def ip_layers_from_state_dict(unet, sd: dict, what: str = "IP-Adapter") -> dict:
    """{processor name: (to_k_ip weight, to_v_ip weight)} from a numbered IP state dict.

    `sd` has keys "<n>.to_k_ip.weight" / "<n>.to_v_ip.weight" (an "ip_adapter." prefix is accepted), n
    numbering all attention processors of the UNet in order (cross-attention layers are the odd ones).
    """
    sd = {k.removeprefix("ip_adapter."): v for k, v in sd.items()}
    ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"(\d+)\.to_k_ip\.weight$", k))})
    names = cross_attention_names(unet)
    if len(ids) != len(names):
        raise IPAttentionError(f"this {what} has image-prompt weights for {len(ids)} cross-attention layers but the "
                               f"pipeline's UNet has {len(names)}: it was made for another model (SD1.5 has 16, "
                               "SDXL 70)")
    out = {}
    for i, name in enumerate(names):
        key = 2 * i + 1
        try:
            k, v = sd[f"{key}.to_k_ip.weight"], sd[f"{key}.to_v_ip.weight"]
        except KeyError as ex:
            raise IPAttentionError(f"this {what} has no to_k_ip/to_v_ip weights numbered {key} (found {ids[:6]}...): "
                                   "the file is damaged or of another layout") from ex
        attn = unet.get_submodule(name[: -len(".processor")])
        inner = int(attn.to_k.out_features)
        if tuple(k.shape)[0] != inner or tuple(v.shape)[0] != inner:
            raise IPAttentionError(f"this {what}'s layer {key} is {k.shape[0]} wide but the UNet's {name} is {inner} "
                                   "wide: it was made for another model")
        if k.shape[1] != v.shape[1]:
            raise IPAttentionError(f"this {what}'s layer {key} has key/value inputs of different widths: damaged file")
        out[name] = (k, v)
    return out


# ------------------------------------------------------------------ per-run state and the processor
class IPAttention:
    """The controller returned by install_ip_attention: holds the run's step for its terms' processors."""

    def __init__(self, terms: list[IPTerm], batch: int, cfg: bool):
        self.terms = list(terms)
        self.batch = int(batch)
        self.cfg = bool(cfg)
        self.step = 0
        self.total = 1
        self.latent_hw: tuple[int, int] | None = None
        self._tokens: dict[int, torch.Tensor] = {}

    def set_step(self, step_index: int, total_steps: int, latent_hw: Sequence[int] | None = None) -> None:
        self.step, self.total = int(step_index), int(total_steps)
        if latent_hw is not None:
            self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))

    def tokens(self, idx: int) -> torch.Tensor:
        """Term idx's tokens for the whole UNet batch ([uncond × B, cond × B] under CFG)."""
        if idx not in self._tokens:
            t = self.terms[idx]
            parts = [(t.uncond if t.uncond is not None else torch.zeros_like(t.cond))] if self.cfg else []
            parts.append(t.cond)
            out = []
            for p in parts:
                if p.ndim != 3:
                    raise IPAttentionError(f"{t.name}: image tokens must be (batch, tokens, width), not "
                                           f"{tuple(p.shape)}")
                if p.shape[0] == 1:
                    p = p.expand(self.batch, -1, -1)
                elif p.shape[0] != self.batch:
                    raise IPAttentionError(f"{t.name}: {p.shape[0]} token sets for {self.batch} images; give one for "
                                           "all or one per image")
                out.append(p)
            self._tokens[idx] = torch.cat(out)
        return self._tokens[idx]

    def grid(self, n: int, mask_hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) of an attention layer with n queries."""
        if self.latent_hw:
            h, w = self.latent_hw
            for _ in range(8):
                if h * w == n:
                    return h, w
                h, w = (h + 1) // 2, (w + 1) // 2
        ratio = mask_hw[1] / mask_hw[0]  # diffusers' guess from the mask's aspect ratio
        mh = int(math.sqrt(n / ratio))
        mh = max(1, mh + int(n % max(mh, 1) != 0))
        return mh, max(1, n // mh)


def _layer_mask(mask: torch.Tensor, ctl: IPAttention, batch: int, n: int, dtype, device) -> torch.Tensor:
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    gh, gw = ctl.grid(n, tuple(m.shape[-2:]))
    m = F.interpolate(m.unsqueeze(1), size=(gh, gw), mode="bicubic").flatten(1)  # (M, gh*gw)
    if m.shape[1] < n:
        m = F.pad(m, (0, n - m.shape[1]))
    m = m[:, :n]
    if m.shape[0] == 1:
        m = m.expand(batch, -1)
    elif ctl.cfg and m.shape[0] * 2 == batch:
        m = torch.cat([m, m])
    elif m.shape[0] != batch:
        raise IPAttentionError(f"the attention mask has a batch of {mask.shape[0]} for {batch // (2 if ctl.cfg else 1)}"
                               " images; give one mask for all or one per image")
    return m.unsqueeze(-1).to(device=device, dtype=dtype)


class IPAttnProcessor:
    """An attention processor with image-prompt terms (not an nn.Module: the UNet's state dict is untouched)."""

    def __init__(self, base, name: str):
        self.base = base  # the processor it replaces for the run
        self.name = name
        self.terms: list[tuple[IPAttention, int, torch.Tensor, torch.Tensor]] = []  # (controller, term idx, k, v)
        self._kv: dict = {}
        self._masks: dict = {}

    def _active(self):
        out = []
        for ctl, idx, k_w, v_w in self.terms:
            s = ctl.terms[idx].scale_at(ctl.step, ctl.total)
            if s != 0:
                out.append((ctl, idx, k_w, v_w, s))
        return out

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        active = self._active() if encoder_hidden_states is not None else []
        if not active:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        ehs = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        key, value = attn.to_k(ehs), attn.to_v(ehs)
        inner = key.shape[-1]
        head_dim = inner // attn.heads

        def heads(x):
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query = heads(query)
        out = F.scaled_dot_product_attention(query, heads(key), heads(value), attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        for ctl, idx, k_w, v_w, s in active:
            cache_key = (id(ctl), idx)
            if cache_key not in self._kv:
                tok = ctl.tokens(idx)
                if tok.shape[0] != batch:
                    raise IPAttentionError(f"{ctl.terms[idx].name}: the UNet ran a batch of {batch} but the image "
                                           f"tokens were prepared for {tok.shape[0]}")
                tok = tok.to(device=query.device, dtype=query.dtype)
                k_w = k_w.to(device=query.device, dtype=query.dtype)
                v_w = v_w.to(device=query.device, dtype=query.dtype)
                self._kv[cache_key] = (heads(F.linear(tok, k_w)), heads(F.linear(tok, v_w)))
            ip_k, ip_v = self._kv[cache_key]
            ip = F.scaled_dot_product_attention(query, ip_k, ip_v, attn_mask=None, dropout_p=0.0, is_causal=False)
            ip = ip.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
            mask = ctl.terms[idx].mask
            if mask is not None:
                mkey = (id(ctl), idx, ip.shape[1], ctl.latent_hw)
                if mkey not in self._masks:
                    self._masks[mkey] = _layer_mask(mask, ctl, batch, ip.shape[1], query.dtype, query.device)
                ip = ip * self._masks[mkey]
            out = out + s * ip
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_ip_attention(patches, unet, terms: Sequence[IPTerm], *, batch: int, cfg: bool) -> IPAttention:
    """Put `terms` on the UNet's cross-attention layers for this run (undone by `patches`); see the module doc.

    batch: images generated per UNet half; cfg: whether the UNet batch is [negative, positive] halves.
    Returns the controller whose set_step(step_index, total_steps, latent_hw) must be called before each UNet call.
    """
    ctl = IPAttention(terms, batch, cfg)
    if cfg and any(t.uncond is None for t in terms):
        missing = next(t.name for t in terms if t.uncond is None)
        raise IPAttentionError(f"{missing}: classifier-free guidance needs unconditional image tokens")
    cross = set(cross_attention_names(unet))
    for idx, term in enumerate(terms):
        unknown = [n for n in term.weights if n not in cross]
        if unknown:
            raise IPAttentionError(f"{term.name}: the UNet has no cross-attention layer {unknown[0]}")
        if term.mask is not None and term.mask.ndim == 3 and term.mask.shape[0] not in (1, int(batch)):
            raise IPAttentionError(f"{term.name}: the attention mask has a batch of {term.mask.shape[0]} for {batch} "
                                   "images; give one mask for all or one per image")
        targets = [n for n in term.weights if term.acts_on(n)]
        if term.blocks is not None and not targets:
            have = sorted({n.split(".transformer_blocks.")[0] for n in term.weights})
            raise IPAttentionError(f"{term.name}: none of the blocks {list(term.blocks)} is a cross-attention layer "
                                   f"of this UNet (it has {', '.join(have)})")
        for name in targets:
            attn = unet.get_submodule(name[: -len(".processor")])
            proc = attn.processor
            if not isinstance(proc, IPAttnProcessor):
                proc = IPAttnProcessor(proc, name)
                old = attn.processor
                patches.add(lambda a=attn, p=proc: a.set_processor(p), lambda a=attn, o=old: a.set_processor(o),
                            f"attention processor {name}")
            k_w, v_w = term.weights[name]
            if k_w.shape[1] != term.cond.shape[-1] or v_w.shape[1] != term.cond.shape[-1]:
                raise IPAttentionError(f"{term.name}: its image tokens are {term.cond.shape[-1]} wide but the layer "
                                       f"{name} takes {k_w.shape[1]}-wide tokens")
            item = (ctl, idx, k_w, v_w)
            patches.add(lambda p=proc, it=item: p.terms.append(it), lambda p=proc, it=item: _remove(p.terms, it),
                        f"ip term {name}")
    return ctl


def _remove(items: list, item) -> None:
    for i, x in enumerate(items):
        if x is item:
            del items[i]
            return


def describe_installed(unet) -> dict[str, Any]:
    """{processor name: number of image-prompt terms} of the processors installed now (for tests and logs)."""
    return {n: len(p.terms) for n, p in unet.attn_processors.items() if isinstance(p, IPAttnProcessor)}
