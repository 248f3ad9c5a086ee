"""Prompt encoding for SD1.5 / SDXL: text → VK_CONDITIONING, with ComfyUI's prompt weighting and clip skip.

Engine API (no ComfyUI import; testable with bare diffusers/transformers components):

- `parse_weights(text) -> [(text, weight), ...]`: the weighting grammar below.
- `tokenize_chunks(tokenizer, text, max_length=77) -> [[(token_id, weight), ...], ...]`: 77-token chunks.
- `encode(comps, text, stop_at_clip_layer=0) -> (embeds (1, 77·chunks, D), pooled (1, P) | None)`.
- `encode_pair(handle_or_comps, positive, negative, stop_at_clip_layer=0, size=SizeCond()) -> Conditioning`.
- `text_encoder_patches(handle, comps, patches)`: the LoRA hook (see below).
- `repeat_to_common_length(*embeds)`: what a sampler does with prompts of different lengths.

Grammar (ComfyUI core's, read from comfy/sd1_clip.py of ComfyUI 0.3.64, plus DESIGN.md's `[text]`):
- `(text)` multiplies the weight by 1.1, `(text:1.3)` sets it to 1.3. An explicit weight replaces the
  weight inherited from the enclosing groups, as in ComfyUI: `((a))` = 1.21, `((a:1.5))` = 1.5,
  `[(a:1.5)]` = 1.5. The weight is the text after the last ':' when Python's float() reads it; otherwise
  the colon stays part of the text and the group is a plain (…) = ×1.1.
- `[text]` divides the weight by 1.1 and nests like (…): `[[a]]` = 1/1.21, `([a])` = 1.0. ComfyUI core no
  longer gives brackets a meaning (they reach the tokenizer as text); DESIGN.md asks for A1111's rule, so
  VisionKit follows DESIGN.md here. No explicit weight inside brackets and no A1111 prompt editing
  (`[a:b:0.5]`): that text is encoded as written, at ÷1.1.
- `\\(` `\\)` (and VisionKit's `\\[` `\\]`) are literal brackets.
- Unbalanced brackets never fail; they are handled as ComfyUI handles them: one depth counter for every
  bracket kind; a group that is never closed, or closed by the other kind, is literal text (brackets
  included) at the surrounding weight; after a stray closing bracket the depth is negative, so the rest of
  that level is literal text too (ComfyUI's parse_parentheses behaves exactly so).
- A weight that is not finite (`(a:nan)`, `(a:inf)`) is not a weight: the group is a plain (…) (ComfyUI
  would pass NaN/inf to the encoder; the only deviation in the parentheses grammar).
- ComfyUI's `embedding:name` (textual inversion) is not supported: the text is encoded as written.

Encoding (ComfyUI's SDClipModel / ClipTokenWeightEncoder):
- Each weighted piece is tokenized on its own; pieces become chunks of at most 75 tokens between BOS and
  EOS, padded to 77 with the tokenizer's pad token (SD1.5 and SDXL's CLIP-L: <|endoftext|>; SDXL's
  OpenCLIP-bigG tokenizer_2: "!", id 0). A piece of 8 tokens or more is split wherever the chunk is full;
  a shorter one that does not fit closes the chunk (EOS + padding) and starts the next. ComfyUI 0.3.64
  groups by weighted piece, not by space-separated word (older ComfyUI split words); so an unweighted long
  prompt is cut at exactly 75 tokens, as there.
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

LoRA: a pipeline handle's LoRAs (handle.loras, each with strength_text) must reach the text encoders.
`text_encoder_patches` is the hook: when models/sd/lora.py exists and defines
`apply_lora_text(patches, comps, handle)`, it is called inside the RunPatches block that holds both text
encoders (so the patch is undone after the encode, even on failure, and no other run sees it). Until it
exists, LoRAs on the handle leave the text encoders as they are and a warning is logged once.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from ..core.patching import RunPatches
from .types import (
    Components,
    Conditioning,
    GenerationError,
    PipelineHandle,
    use_components,
)
from ..core import identify

log = logging.getLogger("visionkit")

MAX_LENGTH = 77  # CLIP's context: BOS + 75 tokens + EOS
UP = 1.1  # (text)
MAX_NESTING = 50  # bracket levels; deeper prompts are refused (parsing costs length × depth; 1.1^50 ≈ 117)
LARGE_PIECE = 8  # ComfyUI's max_word_length: a piece this long may be split across chunks
MIN_CLIP_LAYER = -24  # ComfyUI's CLIPSetLastLayer range is -24..-1; 0 = the model's default here
DEFAULT_LAYER = {"sd15": -1, "sdxl": -2}

_OPENERS, _CLOSERS = "([", ")]"
_ESCAPES = (("\\(", "\0\1"), ("\\)", "\0\2"), ("\\[", "\0\3"), ("\\]", "\0\4"))
_TOKENIZER_LOCK = threading.Lock()  # a fast tokenizer sets padding/truncation state per call
_WARNED: set = set()


# ================================================================ the weighting grammar
def _escape(text: str) -> str:
    for esc, mark in _ESCAPES:
        text = text.replace(esc, mark)
    return text


def _unescape(text: str) -> str:
    for esc, mark in _ESCAPES:
        text = text.replace(mark, esc[1])
    return text


def _top_level_pieces(text: str) -> list[str]:
    """Split one nesting level into text runs and bracketed groups (delimiters kept).

    One depth counter for both kinds; a group starts at an opener at depth 0 and ends when the depth
    returns to 0. A stray closer makes the depth negative, after which nothing opens a group at this level.
    """
    pieces: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch in _OPENERS:
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += ch
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            current += ch
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def _explicit_weight(s: str) -> float | None:
    try:
        w = float(s)
    except ValueError:
        return None
    return w if math.isfinite(w) else None


def _weigh(text: str, weight: float, out: list) -> None:
    """Append the (piece, weight) runs of `text` to `out`, in order.

    Iterative (an explicit stack of levels still to split), so nesting depth is bounded by memory, not by
    Python's recursion limit: 5,000 nested parentheses were a RecursionError at execution (issue 19).
    """
    stack = [(text, weight, False)]  # (text, weight, is a finished run); popped last-in first-out
    while stack:
        t, w, done = stack.pop()
        if done:
            out.append((t, w))
            continue
        level = []
        for piece in _top_level_pieces(t):
            if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
                inner, pw = piece[1:-1], w * UP
                colon = inner.rfind(":")
                if colon > 0:
                    explicit = _explicit_weight(inner[colon + 1:])
                    if explicit is not None:
                        inner, pw = inner[:colon], explicit
                level.append((inner, pw, False))
            elif len(piece) >= 2 and piece[0] == "[" and piece[-1] == "]":
                level.append((piece[1:-1], w / UP, False))
            else:
                level.append((piece, w, True))
        stack.extend(reversed(level))


def nesting_depth(text: str) -> int:
    """The deepest bracket level in `text` (escaped brackets excluded), in one linear pass."""
    depth = deepest = 0
    for ch in _escape(text or ""):
        if ch in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in _CLOSERS:
            depth -= 1
    return deepest


def check_nesting(text: str, what: str = "the prompt") -> str | None:
    """A message when `text` nests brackets deeper than MAX_NESTING (None = fine); cheap, for VALIDATE_INPUTS."""
    if not isinstance(text, str):
        return None
    n = nesting_depth(text)
    if n > MAX_NESTING:
        return (f"{what} is too deeply nested: {n} levels of ( ) / [ ] brackets, at most {MAX_NESTING} are allowed "
                f"(each level multiplies the weight by 1.1: write (text:1.5) instead, or escape literal brackets "
                f"as \\( \\))")
    return None


def parse_weights(text: str) -> list[tuple[str, float]]:
    """A prompt → [(text, weight), ...] in order; escapes resolved, empty pieces dropped."""
    msg = check_nesting(text)
    if msg:
        raise GenerationError(msg)
    out: list = []
    _weigh(_escape(text or ""), 1.0, out)
    return [(t, w) for t, w in ((_unescape(t), w) for t, w in out) if t != ""]


# ================================================================ tokens and chunks
def _raw_tokenizer(tokenizer):
    return getattr(tokenizer, "_tok", tokenizer)  # clip_base's _HFTokenizer wraps a transformers tokenizer


@dataclass(frozen=True)
class _Special:
    bos: int
    eos: int
    pad: int


def _special(tok) -> _Special:
    bos, eos = getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)
    if bos is None or eos is None:
        raise GenerationError(f"the pipeline's tokenizer ({type(tok).__name__}) has no start/end-of-text token; "
                              "it is not a CLIP tokenizer")
    pad = getattr(tok, "pad_token_id", None)
    return _Special(int(bos), int(eos), int(eos if pad is None else pad))


def _token_ids(tok, text: str) -> list[int]:
    with _TOKENIZER_LOCK:
        return list(tok(text, add_special_tokens=False)["input_ids"])


def tokenize_chunks(tokenizer, text: str, max_length: int = MAX_LENGTH) -> list[list[tuple[int, float]]]:
    """The prompt as chunks of `max_length` (token id, weight) pairs: BOS, ≤ max_length−2 tokens, EOS, padding."""
    tok = _raw_tokenizer(tokenizer)
    sp = _special(tok)
    if "embedding:" in (text or "") and "embedding" not in _WARNED:
        _WARNED.add("embedding")
        log.warning("VisionKit prompt: textual-inversion embeddings ('embedding:name') are not supported; "
                    "the text is encoded as written")
    room = max_length - 1  # a chunk holds BOS + tokens; EOS takes the last place
    chunk: list = [(sp.bos, 1.0)]
    chunks = [chunk]
    for piece, weight in parse_weights(text):
        group = [(t, weight) for t in _token_ids(tok, piece)]
        large = len(group) >= LARGE_PIECE
        while group:
            if len(chunk) + len(group) <= room:
                chunk.extend(group)
                break
            left = room - len(chunk)
            if large:
                chunk.extend(group[:left])
                group = group[left:]
                chunk.append((sp.eos, 1.0))
            else:
                chunk.append((sp.eos, 1.0))
                chunk.extend([(sp.pad, 1.0)] * left)
            chunk = [(sp.bos, 1.0)]
            chunks.append(chunk)
    chunk.append((sp.eos, 1.0))
    chunk.extend([(sp.pad, 1.0)] * (max_length - len(chunk)))
    return chunks


def empty_ids(tokenizer, max_length: int = MAX_LENGTH) -> list[int]:
    sp = _special(_raw_tokenizer(tokenizer))
    return [sp.bos, sp.eos] + [sp.pad] * (max_length - 2)


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

    The LoRA engine provides `models/sd/lora.py apply_lora_text(patches, comps, handle)`: it patches the encoders in
    place once per stack (kept until another stack is asked for) while `patches` holds their locks; a handle
    without LoRAs (or none) gets the original weights back.
    """
    loras = tuple(getattr(handle, "loras", ()) or ())
    sd_lora = None
    pkg = __package__ or ""
    if pkg and importlib.util.find_spec(f"{pkg}.sd_lora") is not None:
        from . import lora as sd_lora
    if not loras:  # a stack another prompt left on the shared encoders comes off (sd_lora_apply)
        off = getattr(sd_lora, "apply_no_lora_text", None)
        if off is not None and comps is not None and patches is not None:
            off(patches, comps)
        return False
    apply = getattr(sd_lora, "apply_lora_text", None)
    if apply is None:
        if "lora" not in _WARNED:
            _WARNED.add("lora")
            log.warning("VisionKit prompt: LoRA text-encoder weights are not applied yet (models/sd/lora.py "
                        "has no apply_lora_text); the prompt is encoded without them")
        return False
    apply(patches, comps, handle)
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
    raise GenerationError(f"prompt encoding needs a VK_PIPELINE, got {type(target).__name__}")


# ================================================================ for the sampler
def repeat_to_common_length(*embeds):
    """Repeat (B, T_i, D) tensors along the token axis to the least common multiple of the T_i (ComfyUI)."""
    lengths = [e.shape[1] for e in embeds]
    common = 1
    for t in lengths:
        common = common * t // math.gcd(common, t)
    return tuple(e if e.shape[1] == common else e.repeat(1, common // e.shape[1], 1) for e in embeds)


def describe(cond: Conditioning) -> dict[str, Any]:
    """Shapes of a Conditioning, for logs and readouts."""
    shape = lambda t: list(t.shape) if t is not None else None
    return {"arch": cond.arch, "prompt_embeds": shape(cond.prompt_embeds),
            "negative_prompt_embeds": shape(cond.negative_prompt_embeds), "pooled": shape(cond.pooled),
            "add_time_ids": list(cond.add_time_ids)}


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
