"""How texts and images become CLIP's inputs: the BPE tokenizers (offline, from open_clip's bundled vocabulary)
and the image preprocessing (the libraries' eval transforms, on tensors). Also the error every CLIP module
raises for a model it cannot run (ClipModelError); the SD text encoders use the tokenizer files and the error.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import threading
from dataclasses import dataclass

from ..core.errors import VisionKitError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BPE_VOCAB = 49408  # CLIP's BPE: 256 bytes, 256 bytes + </w>, 48894 merges, start and end of text


class ClipModelError(VisionKitError):
    """A file or folder in clip_models that is not a CLIP model VisionKit can run; says what it is."""


# ================================================================ preprocessing
@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input (the library's eval transform, on tensors)."""

    size: tuple  # (height, width) the network takes
    resize: int | tuple = 224  # shortest side (int), or the exact (h, w) for "squash"
    resize_mode: str = "shortest"  # "shortest" + centre crop | "squash" | "longest" + centre pad
    mean: tuple = OPENAI_MEAN
    std: tuple = OPENAI_STD
    interpolation: str = "bicubic"  # or "bilinear"
    crop_rounding: str = "round"  # "round": torchvision / open_clip; "floor": transformers
    crop: bool = True


def _resized_shortest(h: int, w: int, short: int) -> tuple[int, int]:
    """torchvision / transformers: the short side becomes `short`, the long one int(short * long / short)."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def _crop_or_pad(x, out_h: int, out_w: int, rounding: str):
    """Centre crop (B, C, H, W) to (out_h, out_w), padding with zeros first where it is smaller."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if out_h > h or out_w > w:
        pl = (out_w - w) // 2 if out_w > w else 0
        pt = (out_h - h) // 2 if out_h > h else 0
        pr = (out_w - w + 1) // 2 if out_w > w else 0
        pb = (out_h - h + 1) // 2 if out_h > h else 0
        x = F.pad(x, (pl, pr, pt, pb), value=0.0)
        h, w = x.shape[-2:]
        if (h, w) == (out_h, out_w):
            return x
    if rounding == "floor":
        top, left = int((h - out_h) / 2.0), int((w - out_w) / 2.0)
    else:
        top, left = round((h - out_h) / 2.0), round((w - out_w) / 2.0)
    return x[..., top:top + out_h, left:left + out_w]


def _resize_like_pil(x, size: tuple, mode: str):
    """Resize (B, C, H, W) in 0..1 as PIL resizes an 8-bit image: antialiased kernels (a = -0.5 bicubic),
    the horizontal pass first, each pass clamped and rounded to 8 bits. Without the intermediate clamp
    and rounding, the overshoot of bicubic upscaling on sharp edges differs by up to ~10 levels."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if w != size[1]:
        x = F.interpolate(x, size=(h, size[1]), mode=mode, align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)
    if h != size[0]:
        x = F.interpolate(x, size=(size[0], size[1]), mode=mode, align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)
    return x


def preprocess_images(images, pre: Preprocess, device=None, dtype=None):
    """IMAGE (B, H, W, C) float in 0..1 → the network's pixel tensor (B, 3, h, w), normalised.

    Alpha is dropped (as PIL's convert("RGB")). The resize follows PIL's (see _resize_like_pil); against the
    libraries' own PIL / torchvision pipelines on the same 8-bit image the pixels differ by at most one 8-bit
    level on photo-like images (measured; Pillow 13 sometimes runs its passes in the other order, which on
    pixel noise upscaled with bicubic can move a few pixels by more).
    """
    import torch

    x = images[..., :3].permute(0, 3, 1, 2).to(device=device or images.device, dtype=torch.float32)
    h, w = x.shape[-2:]
    th, tw = pre.size
    if pre.resize_mode == "squash":
        size = tuple(pre.resize) if isinstance(pre.resize, (tuple, list)) else (th, tw)
    elif pre.resize_mode == "longest":
        ratio = max(h / th, w / tw)
        size = (round(h / ratio), round(w / ratio))
    elif isinstance(pre.resize, int):
        size = _resized_shortest(h, w, pre.resize)
    else:  # a non-square input: open_clip's ResizeKeepRatio (shortest edge to its target), then the crop
        ratio = min(h / th, w / tw)
        size = (round(h / ratio), round(w / ratio))
    if tuple(size) != (h, w):
        x = _resize_like_pil(x, tuple(size), "bilinear" if pre.interpolation == "bilinear" else "bicubic")
    if pre.crop or pre.resize_mode == "longest":
        x = _crop_or_pad(x, th, tw, pre.crop_rounding)
    mean = torch.tensor(pre.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.to(dtype) if dtype is not None else x


# ================================================================ tokenizers
def bpe_path() -> str:
    """open_clip's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz), found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.origin:
        raise ClipModelError("open_clip is not installed, and its BPE vocabulary is the CLIP tokenizer VisionKit "
                             "uses offline: pip install open_clip_torch (it is in requirements.txt)")
    p = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(p):
        raise ClipModelError(f"open_clip's BPE vocabulary is missing ({p}); reinstall open_clip_torch")
    return p


def _bytes_to_unicode() -> dict:
    """GPT-2 / CLIP byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=1)
def bpe_vocab_and_merges() -> tuple[dict, list]:
    """CLIP's byte-level vocab (49408 entries) and merges, from open_clip's BPE file."""
    with gzip.open(bpe_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {v: i for i, v in enumerate(vocab)}, merges


class OpenClipTokenizer:
    """open_clip's SimpleTokenizer: (ids (N, ctx), None)."""

    def __init__(self, context_length: int):
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = context_length
        self._tok = SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: list[str]):
        return self._tok(texts, context_length=self.context_length), None


class _HFTokenizer:
    """A transformers CLIPTokenizer: (ids (N, ctx), attention mask). Locked: a fast tokenizer sets its
    padding/truncation state per call, which two threads must not do at once."""

    def __init__(self, tok, context_length: int):
        self.context_length = context_length
        self._tok = tok
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]):
        with self._lock:
            enc = self._tok(list(texts), padding="max_length", max_length=self.context_length, truncation=True,
                            return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]


def hf_bpe_tokenizer(context_length: int):
    from transformers import CLIPTokenizer

    vocab, merges = bpe_vocab_and_merges()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=context_length)
    return _HFTokenizer(tok, context_length)


def hf_folder_tokenizer(folder: str, context_length: int):
    """The folder's own tokenizer files (tokenizer.json or vocab.json + merges.txt), or None."""
    has = lambda *names: all(os.path.isfile(os.path.join(folder, n)) for n in names)
    if not (has("tokenizer.json") or has("vocab.json", "merges.txt")):
        return None
    from transformers import CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=context_length)
    except Exception as ex:
        raise ClipModelError(f"{os.path.basename(folder)}: its tokenizer files could not be read "
                             f"({str(ex).splitlines()[0][:200] if str(ex) else type(ex).__name__}); delete them to "
                             "use CLIP's standard tokenizer, or download them again") from ex
    tok.model_max_length = context_length
    return _HFTokenizer(tok, context_length)
