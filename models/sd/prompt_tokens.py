"""Prompt text → weighted CLIP tokens: ComfyUI's prompt-weighting grammar and its 77-token chunks.

- `parse_weights(text) -> [(text, weight), ...]`: the weighting grammar below.
- `check_nesting(text)`: the bracket-depth limit, cheap enough for VALIDATE_INPUTS.
- `tokenize_chunks(tokenizer, text, max_length=77) -> [[(token_id, weight), ...], ...]`: 77-token chunks.
- `empty_ids(tokenizer)`: the empty prompt's ids (BOS, EOS, padding), the reference for weights.

Grammar (ComfyUI core's, read from comfy/sd1_clip.py of ComfyUI 0.3.64, plus A1111's `[text]`):
- `(text)` multiplies the weight by 1.1, `(text:1.3)` sets it to 1.3. An explicit weight replaces the
  weight inherited from the enclosing groups, as in ComfyUI: `((a))` = 1.21, `((a:1.5))` = 1.5,
  `[(a:1.5)]` = 1.5. The weight is the text after the last ':' when Python's float() reads it; otherwise
  the colon stays part of the text and the group is a plain (…) = ×1.1.
- `[text]` divides the weight by 1.1 and nests like (…): `[[a]]` = 1/1.21, `([a])` = 1.0. ComfyUI core no
  longer gives brackets a meaning (they reach the tokenizer as text); VisionKit keeps A1111's rule for
  them. No explicit weight inside brackets and no A1111 prompt editing
  (`[a:b:0.5]`): that text is encoded as written, at ÷1.1.
- `\\(` `\\)` (and VisionKit's `\\[` `\\]`) are literal brackets.
- Unbalanced brackets never fail; they are handled as ComfyUI handles them: one depth counter for every
  bracket kind; a group that is never closed, or closed by the other kind, is literal text (brackets
  included) at the surrounding weight; after a stray closing bracket the depth is negative, so the rest of
  that level is literal text too (ComfyUI's parse_parentheses behaves exactly so).
- A weight that is not finite (`(a:nan)`, `(a:inf)`) is not a weight: the group is a plain (…) (ComfyUI
  would pass NaN/inf to the encoder; the only deviation in the parentheses grammar).
- ComfyUI's `embedding:name` (textual inversion) is not supported: the text is encoded as written.

Chunks (ComfyUI's SDClipModel / ClipTokenWeightEncoder):
- Each weighted piece is tokenized on its own; pieces become chunks of at most 75 tokens between BOS and
  EOS, padded to 77 with the tokenizer's pad token (SD1.5 and SDXL's CLIP-L: <|endoftext|>; SDXL's
  OpenCLIP-bigG tokenizer_2: "!", id 0). A piece of 8 tokens or more is split wherever the chunk is full;
  a shorter one that does not fit closes the chunk (EOS + padding) and starts the next. ComfyUI 0.3.64
  groups by weighted piece, not by space-separated word (older ComfyUI split words); so an unweighted long
  prompt is cut at exactly 75 tokens, as there.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

from .types import GenerationError

log = logging.getLogger("visionkit")

MAX_LENGTH = 77  # CLIP's context: BOS + 75 tokens + EOS
UP = 1.1  # (text)
MAX_NESTING = 50  # bracket levels; deeper prompts are refused (parsing costs length × depth; 1.1^50 ≈ 117)
LARGE_PIECE = 8  # ComfyUI's max_word_length: a piece this long may be split across chunks

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
    return getattr(tokenizer, "_tok", tokenizer)  # perception/clip_inputs' tokenizer wrapper wraps a transformers tokenizer


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
