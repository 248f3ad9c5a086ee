"""Prompt encoding for SD1.5 / SDXL: text → VK_CONDITIONING, with ComfyUI's prompt weighting and clip skip.

Engine API (no ComfyUI import; testable with bare diffusers/transformers components):

- `encode(comps, text, stop_at_clip_layer=0) -> (embeds (1, 77·chunks, D), pooled (1, P) | None)`.
- `encode_pair(handle_or_comps, positive, negative, stop_at_clip_layer=0, size=SizeCond()) -> Conditioning`.
- `text_encoder_patches(handle, comps, patches)`: the LoRA hook (see below).
- `repeat_to_common_length(*embeds)`: what a sampler does with prompts of different lengths.

The weighting grammar and the 77-token chunks (`parse_weights`, `tokenize_chunks`): models/sd/prompt_tokens.py.

Encoding (ComfyUI's SDClipModel / ClipTokenWeightEncoder):
- Chunks are encoded as one batch and concatenated along the token axis: (1, 77·n, D).
- Weights: per token position j of each chunk, z[j] = (z[j] − z_empty[j])·w + z_empty[j] where w ≠ 1,
  z_empty being the encoding of the empty prompt (BOS, EOS, padding) from the same layer.
- Clip skip is ComfyUI's `stop_at_clip_layer`: -1 = the last layer, -2 = the penultimate, … For SD1.5
  the chosen hidden state goes through the final layer norm (ComfyUI's layer_norm_hidden_state=True; -1 is
  then exactly `last_hidden_state`). For SDXL both encoders return the raw hidden state, no final norm
  (ComfyUI's SDXL clip models), and SDXL's default is -2 on both encoders (ComfyUI and diffusers agree).
  VisionKit adds 0 = "the model's default" (SD1.5: -1, SDXL: -2), the node's default, because one widget
  default cannot be right for both: -1 on SDXL is, as in ComfyUI, the last layer without the final norm.
  diffusers' `clip_skip=k` is stop_at_clip_layer -(k+1) on SD1.5 and -(k+2) on SDXL. A layer beyond the
  encoder's depth is an error (ComfyUI silently falls back to the last layer).
- SDXL: CLIP-L (text_encoder, 768) and OpenCLIP-bigG (text_encoder_2, 1280) concatenated to 2048 per
  token (cut to the shorter one, which never differs for the standard tokenizers); the pooled output is
  text_encoder_2's text_projection of the FIRST chunk's EOS state, from the last layer and unweighted
  (ComfyUI's first_pooled), independent of clip skip.
- An empty prompt is the empty prompt's encoding (so an empty negative is that too; diffusers' SDXL
  "force zeros for empty prompt" is not used, as in ComfyUI).
- Positive and negative keep their own lengths (ComfyUI does too); a sampler that batches them repeats the
  shorter along the token axis to the least common multiple (`repeat_to_common_length`, ComfyUI's
  CONDCrossAttn.concat; repeating keys and values leaves cross-attention unchanged).
- Results are float32 on the CPU; the sampler moves them.

LoRA: a pipeline handle's LoRAs (handle.loras, each with strength_text) reach the text encoders through
`text_encoder_patches`, which calls models/sd/lora.py's `apply_lora_text(patches, comps, handle)` inside the
RunPatches block that holds both text encoders' locks: the stack is patched in place once and kept, recorded,
until an encode asks for another stack; a handle without LoRAs gets the original weights back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import identify
from ..core.patching import RunPatches
from . import lora
from .prompt_tokens import MAX_LENGTH, empty_ids, tokenize_chunks
from .types import (
    PIPELINE_TYPE,
    Components,
    Conditioning,
    GenerationError,
    PipelineHandle,
    use_components,
)

MIN_CLIP_LAYER = -24  # ComfyUI's CLIPSetLastLayer range is -24..-1; 0 = the model's default here
DEFAULT_LAYER = {"sd15": -1, "sdxl": -2}


# ================================================================ encoders
def _check_layer(stop_at_clip_layer) -> int:
    if isinstance(stop_at_clip_layer, bool) or not isinstance(stop_at_clip_layer, int):
        try:
            if float(stop_at_clip_layer) != int(stop_at_clip_layer):
                raise ValueError
            stop_at_clip_layer = int(stop_at_clip_layer)
        except (TypeError, ValueError) as ex:
            raise GenerationError(f"stop_at_clip_layer must be a whole number, not {stop_at_clip_layer!r}") from ex
    if not MIN_CLIP_LAYER <= stop_at_clip_layer <= 0:
        raise GenerationError(f"stop_at_clip_layer {stop_at_clip_layer} is outside {MIN_CLIP_LAYER}..0 "
                              "(-1 = last layer, -2 = penultimate, 0 = the model's default)")
    return stop_at_clip_layer


def _num_layers(te) -> int:
    cfg = getattr(te, "config", None)
    n = getattr(cfg, "num_hidden_layers", None)
    if n is None:
        inner = getattr(te, "text_model", te)
        n = len(inner.encoder.layers)
    return int(n)


def _final_norm(te):
    norm = getattr(te, "final_layer_norm", None)  # transformers 5 CLIPTextModel
    if norm is None:
        norm = te.text_model.final_layer_norm  # CLIPTextModelWithProjection / transformers 4
    return norm


def _device(te):
    for p in te.parameters():
        return p.device
    return None


def _encode_with(te, tokenizer, text: str, layer: int, final_norm: bool, pooled: bool, what: str):
    """One text encoder: (z (1, 77·n, D) float32, pooled (1, P) float32 | None), weights applied."""
    import torch

    if -layer > _num_layers(te):
        raise GenerationError(f"stop_at_clip_layer {layer}: the {what} has only {_num_layers(te)} layers; "
                              f"use -1..-{_num_layers(te)}")
    max_length = int(getattr(getattr(te, "config", None), "max_position_embeddings", MAX_LENGTH) or MAX_LENGTH)
    max_length = min(max_length, MAX_LENGTH)
    chunks = tokenize_chunks(tokenizer, text, max_length)
    ids = [[t for t, _ in c] for c in chunks]
    weights = torch.tensor([[w for _, w in c] for c in chunks], dtype=torch.float32)
    weighted = bool((weights != 1.0).any())
    if weighted:
        ids.append(empty_ids(tokenizer, max_length))
    input_ids = torch.tensor(ids, dtype=torch.long, device=_device(te))
    out = te(input_ids=input_ids, output_hidden_states=True)
    if final_norm and layer == -1:
        z = out.last_hidden_state
    else:
        z = out.hidden_states[layer]
        if final_norm:
            z = _final_norm(te)(z)
    z = z.float().cpu()
    pool = None
    if pooled:
        pool = getattr(out, "text_embeds", None)
        if pool is None:
            raise GenerationError(f"the {what} has no text projection (SDXL's text_encoder_2 must be a "
                                  "CLIPTextModelWithProjection)")
        pool = pool[0:1].float().cpu()  # the first chunk's, unweighted (ComfyUI's first_pooled)
    if weighted:
        z_empty, z = z[-1:], z[:-1]
        w = weights.unsqueeze(-1)
        z = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
    return z.reshape(1, -1, z.shape[-1]).contiguous(), pool


def resolve_layer(arch: str, stop_at_clip_layer: int = 0) -> int:
    """ComfyUI's stop_at_clip_layer with 0 = the architecture's default (SD1.5 -1, SDXL -2)."""
    layer = _check_layer(stop_at_clip_layer)
    if arch not in DEFAULT_LAYER:
        raise GenerationError(f"prompt encoding knows SD1.5 and SDXL pipelines, not {arch!r}")
    return layer or DEFAULT_LAYER[arch]


def encode(comps: Components, text: str, stop_at_clip_layer: int = 0):
    """Encode one prompt with the pipeline's text encoder(s).

    Returns (embeds (1, 77·chunks, 768 | 2048) float32 CPU, pooled (1, 1280) for SDXL else None).
    Patches (LoRA) are the caller's business: see encode_pair.
    """
    import torch

    layer = resolve_layer(comps.arch, stop_at_clip_layer)
    if comps.text_encoder is None or comps.tokenizer is None:
        raise GenerationError("this pipeline has no CLIP text encoder (text_encoder/tokenizer); "
                              "an SDXL refiner-only pipeline cannot encode prompts here")
    with torch.no_grad():
        if comps.arch == "sd15":
            return _encode_with(comps.text_encoder, comps.tokenizer, text, layer, True, False, "text encoder")[0], None
        if comps.text_encoder_2 is None or comps.tokenizer_2 is None:
            raise GenerationError("this SDXL pipeline lacks text_encoder_2/tokenizer_2 (OpenCLIP-bigG)")
        z_l, _ = _encode_with(comps.text_encoder, comps.tokenizer, text, layer, False, False,
                              "CLIP-L text encoder")
        z_g, pooled = _encode_with(comps.text_encoder_2, comps.tokenizer_2, text, layer, False, True,
                                   "OpenCLIP-bigG text encoder")
        n = min(z_l.shape[1], z_g.shape[1])
        return torch.cat([z_l[:, :n], z_g[:, :n]], dim=-1), pooled


# ================================================================ LoRA hook
def text_encoder_patches(handle, comps: Components, patches: RunPatches) -> bool:
    """Apply the handle's LoRAs to the text encoders for this run; True when something was applied.

    models/sd/lora.py patches the encoders in place once per stack (kept until another stack is asked for) while
    `patches` holds their locks; a handle without LoRAs (or none) gets the original weights back.
    """
    if not getattr(handle, "loras", ()):  # a stack another prompt left on the shared encoders comes off
        if comps is not None and patches is not None:
            lora.apply_no_lora_text(patches, comps)
        return False
    lora.apply_lora_text(patches, comps, handle)
    return True


# ================================================================ the pair → VK_CONDITIONING
@dataclass(frozen=True)
class SizeCond:
    """SDXL's size and crop conditioning (ComfyUI's CLIPTextEncodeSDXL inputs)."""

    width: int = 1024
    height: int = 1024
    crop_w: int = 0
    crop_h: int = 0
    target_width: int = 1024
    target_height: int = 1024

    def time_ids(self) -> tuple:
        # diffusers' add_time_ids order: original (h, w), crop (top, left), target (h, w)
        return (int(self.height), int(self.width), int(self.crop_h), int(self.crop_w),
                int(self.target_height), int(self.target_width))


def _encode_pair_with(comps: Components, positive: str, negative: str, layer: int, size: SizeCond,
                      handle=None) -> Conditioning:
    encoders = [m for m in (comps.text_encoder, comps.text_encoder_2) if m is not None]
    with RunPatches(*encoders) as patches:
        text_encoder_patches(handle, comps, patches)  # no handle: no LoRA (originals put back)
        pos, pos_pooled = encode(comps, positive or "", layer)
        neg, neg_pooled = encode(comps, negative or "", layer)
    sdxl = comps.arch == "sdxl"
    ids = size.time_ids() if sdxl else ()
    return Conditioning(arch=comps.arch, prompt_embeds=pos, negative_prompt_embeds=neg,
                        pooled=pos_pooled, negative_pooled=neg_pooled, add_time_ids=ids,
                        negative_add_time_ids=ids, text=positive or "", negative_text=negative or "")


def encode_pair(target: PipelineHandle | Components, positive: str, negative: str = "",
                stop_at_clip_layer: int = 0, size: SizeCond | None = None) -> Conditioning:
    """Positive and negative prompt → Conditioning (VK_CONDITIONING), float32 on the CPU.

    `target` is a pipeline handle (its components come from the cache, its LoRAs go to the text encoders)
    or bare Components (tests, scripts: no LoRA).
    """
    size = size or SizeCond()
    if isinstance(target, PipelineHandle):
        layer = resolve_layer(target.arch, stop_at_clip_layer)
        with use_components(target) as comps:
            if comps.arch != target.arch:
                raise GenerationError(f"the pipeline handle says {target.arch} but its file loads as {comps.arch}")
            return _encode_pair_with(comps, positive, negative, layer, size, handle=target)
    if isinstance(target, Components):
        return _encode_pair_with(target, positive, negative, resolve_layer(target.arch, stop_at_clip_layer), size)
    raise GenerationError(f"prompt encoding needs a {PIPELINE_TYPE}, got {type(target).__name__}")


# ================================================================ for the sampler
def repeat_to_common_length(*embeds):
    """Repeat (B, T_i, D) tensors along the token axis to the least common multiple of the T_i (ComfyUI)."""
    lengths = [e.shape[1] for e in embeds]
    common = 1
    for t in lengths:
        common = common * t // math.gcd(common, t)
    return tuple(e if e.shape[1] == common else e.repeat(1, common // e.shape[1], 1) for e in embeds)


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _describe_text_encoder(sd, keys) -> str | None:
    if identify.has_prefix(keys, "text_model.", "token_embedding.", "transformer.resblocks."):
        return "a CLIP text encoder only (as Stable Diffusion uses; ComfyUI keeps those in text_encoders)"
    return None


def _describe_embedding(sd, keys) -> str | None:
    if identify.has_prefix(keys, "emb_params", "string_to_param", "clip_l", "clip_g") and len(keys) <= 4:
        return "a textual-inversion embedding"
    return None


identify.register("clip_text", _describe_text_encoder, order=120)
identify.register("textual_inversion", _describe_embedding, order=130)
