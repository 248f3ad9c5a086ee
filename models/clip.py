"""CLIP (image + text towers): zero-shot classification and image–text similarity, through the shared cache.

What a file in `clip_models` may be:
- an open_clip checkpoint (.safetensors / .bin / .pt / .pth; the training `epoch_N.pt` layout and
  `module.` prefixes included). Its architecture is read from the tensors: ViT (width, layers, patch and
  image size, MLP ratio, layer scale, pre-LN), ModifiedResNet (RN50-style), text tower (width, layers,
  context length, projection) and the embed dim. Attention heads are not in the tensors: the text tower
  uses 64-wide heads (every open_clip CLIP does), the vision tower the head width of open_clip's shipped
  config of the same width (80 for ViT-H, 104 for bigG, …; 64 otherwise). An `open_clip_config.json`
  (what open_clip's hub repos ship: {"model_cfg", "preprocess_cfg"}) or `<file stem>.json` next to the
  file replaces the guesses. Models are built with open_clip's own classes; nothing touches a hub.
- a transformers CLIPModel folder (config.json + weights; tokenizer and preprocessor_config.json files
  are used when present), or a single .safetensors file with transformers key names (its CLIPConfig is
  inferred the same way).
The activation is not in the weights either: OpenAI-trained weights use QuickGELU, LAION-trained ones
GELU. `activation="auto"` takes it from the config when there is one, else from the file name ("openai"
or "quickgelu" → QuickGELU), else the library's default (open_clip: GELU; transformers: QuickGELU).

Tokenizer: open_clip checkpoints use open_clip's SimpleTokenizer (offline: the BPE file ships inside
open_clip). transformers models use their folder's tokenizer files, else a CLIPTokenizer built in
memory from that same BPE file (the ids equal open_clip's).

Preprocessing is done here on torch tensors, as the libraries do on PIL images: resize the shortest
side (bicubic, antialiased, 8-bit passes, as PIL) to the model's size, centre crop, normalise with the
model's mean/std. open_clip rounds the crop offset, transformers floors it; both are followed.
"""
from __future__ import annotations

import functools
import glob
import gzip
import importlib.util
import json
import logging
import math
import os
import re
import threading
import zipfile
from dataclasses import dataclass, field

from . import host
from .cache import Loaded, ModelSpec, get_cache
from .weights import WeightsError, load_state_dict

log = logging.getLogger("visionkit")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BPE_VOCAB = 49408  # CLIP's BPE: 256 bytes, 256 bytes + </w>, 48894 merges, start and end of text
ACTIVATIONS = ("auto", "gelu", "quick_gelu")
DTYPES = ("auto", "fp32", "fp16")


class ClipModelError(ValueError):
    """A file or folder in clip_models that is not a CLIP model VisionKit can run; says what it is."""


class ClipInputError(ValueError):
    """Bad labels, templates or texts for a CLIP node; the message says how to fix them."""


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


class _OpenClipTokenizer:
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


def _hf_bpe_tokenizer(context_length: int):
    from transformers import CLIPTokenizer

    vocab, merges = bpe_vocab_and_merges()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=context_length)
    return _HFTokenizer(tok, context_length)


def _hf_folder_tokenizer(folder: str, context_length: int):
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
                             "use CLIP's standard tokenizer, or download them again") from None
    tok.model_max_length = context_length
    return _HFTokenizer(tok, context_length)


# ================================================================ the loaded model
class ClipModel:
    """A loaded CLIP model: the torch module, its tokenizer and preprocessing. Never changed by a run."""

    def __init__(self, family: str, module, tokenizer, preprocess: Preprocess, context_length: int,
                 description: str):
        self.family = family  # "open_clip" | "transformers"
        self.module = module
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.context_length = context_length
        self.description = description

    def vk_modules(self):
        return [self.module]

    def device_dtype(self):
        import torch

        for p in self.module.parameters():
            return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    def tokenize(self, texts: list[str]):
        return self.tokenizer(list(texts))

    def logit_scale(self):
        return self.module.logit_scale.detach().float().exp()

    def logit_bias(self):
        b = getattr(self.module, "logit_bias", None)
        return None if b is None else b.detach().float()

    def encode_pixels(self, pixels):
        """Normalised float32 image embeddings of a preprocessed pixel tensor (B, 3, h, w)."""
        import torch

        device, dtype = self.device_dtype()
        with torch.inference_mode():
            x = pixels.to(device=device, dtype=dtype)
            if self.family == "open_clip":
                f = self.module.encode_image(x)
            else:
                out = self.module.vision_model(pixel_values=x, return_dict=True)
                f = self.module.visual_projection(out.pooler_output)
            f = f.float()
            return f / f.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: list[str]):
        """Normalised float32 text embeddings (N, D)."""
        import torch

        device, _dtype = self.device_dtype()
        ids, mask = self.tokenize(texts)
        with torch.inference_mode():
            ids = ids.to(device)
            if self.family == "open_clip":
                f = self.module.encode_text(ids)
            else:
                out = self.module.text_model(input_ids=ids, attention_mask=None if mask is None else mask.to(device),
                                             return_dict=True)
                f = self.module.text_projection(out.pooler_output)
            f = f.float()
            return f / f.norm(dim=-1, keepdim=True)


# ================================================================ recognising files
def _strip_prefixes(sd: dict) -> dict:
    """Drop wrapper prefixes that every key shares (DDP's `module.`, `model.`, `clip.`, `clip_model.`)."""
    for _ in range(3):
        for p in ("module.", "model.", "clip_model.", "clip.", "_orig_mod."):
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                break
        else:
            break
    return sd


def _has(sd: dict, *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in sd)


def classify_state_dict(sd: dict) -> str:
    """'open_clip' | 'transformers' | a plain-words description of what else the file is (raises)."""
    if _has(sd, "visual.") and _has(sd, "token_embedding.", "text.", "transformer.resblocks."):
        return "open_clip"
    if _has(sd, "vision_model.") and _has(sd, "text_model."):
        return "transformers"
    raise ClipModelError(describe_foreign(sd))


def describe_foreign(sd: dict, name: str = "this file") -> str:
    keys = list(sd)
    guess = None
    if _has(sd, "image_encoder.") and _has(sd, "mask_decoder."):
        guess = "a SAM (segment-anything) checkpoint: put it in the sams folder and use 'VisionKit Load SAM Model'"
    elif "conv_first.weight" in sd and any(".rdb1." in k for k in keys):
        guess = ("a Real-ESRGAN upscaler (RRDBNet): put it in upscale_models and use "
                 "'VisionKit Load Upscale Model (Real-ESRGAN)'")
    elif "body.0.weight" in sd and not _has(sd, "visual.", "vision_model."):
        guess = ("a Real-ESRGAN upscaler (SRVGGNetCompact): put it in upscale_models and use "
                 "'VisionKit Load Upscale Model (Real-ESRGAN)'")
    elif _has(sd, "model.diffusion_model.", "first_stage_model.", "conditioner.embedders."):
        guess = "a Stable Diffusion checkpoint: put it in checkpoints (for VisionKit's pipeline loader)"
    elif (_has(sd, "vision_model.", "visual.") or "visual_projection.weight" in sd) and not _has(
            sd, "text_model.", "token_embedding.", "transformer.resblocks.", "text."):
        guess = ("a CLIP vision encoder without its text tower (as IP-Adapter uses, e.g. "
                 "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors in clip_vision); zero-shot and ranking need the full "
                 "CLIP model (image and text towers)")
    elif _has(sd, "text_model.", "token_embedding.", "transformer.resblocks.") and not _has(
            sd, "vision_model.", "visual."):
        guess = ("a CLIP text encoder only (as Stable Diffusion uses; ComfyUI keeps those in text_encoders); "
                 "zero-shot and ranking need the full CLIP model (image and text towers)")
    elif _has(sd, "image_proj.", "ip_adapter."):
        guess = "IP-Adapter weights: put them in ipadapter"
    elif _has(sd, "transformer.encoder.", "backbone.", "bert.") or any("transformer.decoder" in k for k in keys):
        guess = "a detection model (Grounding DINO?): put it in grounding-dino and use 'VisionKit Load Grounding DINO Model'"
    elif _has(sd, "lora_unet_", "lora_te") or any(".lora_down." in k or "lora_A" in k for k in keys):
        guess = "a LoRA: put it in loras"
    what = guess or f"an unknown model (first keys: {', '.join(keys[:4]) or 'none'})"
    return (f"{name} is not a CLIP model (open_clip checkpoint or transformers CLIPModel); it looks like {what}. "
            "Put an open_clip checkpoint (.safetensors/.bin) or a transformers CLIPModel folder into clip_models.")


def _torchscript_archive(path: str) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
    except OSError:
        return False


# ================================================================ open_clip architecture
def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


@functools.lru_cache(maxsize=1)
def _shipped_open_clip_configs() -> dict:
    """open_clip's model_configs/*.json (read as files: no import, no hub)."""
    spec = importlib.util.find_spec("open_clip")
    out = {}
    if spec is None or not spec.origin:
        return out
    for f in sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "model_configs", "*.json"))):
        try:
            with open(f, encoding="utf-8") as fh:
                out[os.path.basename(f)[:-5]] = json.load(fh)
        except (OSError, ValueError):
            continue
    return out


def _vision_head_width(width: int) -> int:
    """The head width open_clip's shipped ViT configs use for this width (64 unless one says otherwise)."""
    for cfg in _shipped_open_clip_configs().values():
        v = cfg.get("vision_cfg", {})
        if isinstance(v.get("layers"), int) and v.get("width") == width and not v.get("timm_model_name"):
            return int(v.get("head_width", 64))
    return 64


def _ratio(hidden: int, width: int) -> float:
    r = hidden / width
    return float(int(r)) if r == int(r) else round(r, 4)


def infer_open_clip_config(sd: dict, name: str = "file") -> dict:
    """open_clip model config ({"embed_dim", "vision_cfg", "text_cfg", …}) read from a state-dict."""
    unsupported = None
    if _has(sd, "visual.trunk."):
        unsupported = "its image tower is a timm model (SigLIP, ConvNeXt, …)"
    elif _has(sd, "text.transformer.embeddings.", "text.transformer.encoder."):
        unsupported = "its text tower is a Hugging Face model (XLM-RoBERTa, mT5, …)"
    elif _has(sd, "text_decoder.", "visual.attn_pool.") or "text.cls_emb" in sd:
        unsupported = "it is a CoCa (captioning) model"
    if unsupported:
        raise ClipModelError(f"{name} is an open_clip checkpoint, but {unsupported}, which VisionKit's CLIP nodes do "
                             "not run; use a standard CLIP (ViT or ResNet towers, CLIP tokenizer)")
    t = "text." if "text.token_embedding.weight" in sd else ""
    try:
        tok = sd[f"{t}token_embedding.weight"]
        pos = sd[f"{t}positional_embedding"]
        text_width = int(sd[f"{t}ln_final.weight"].shape[0])
    except KeyError as ex:
        raise ClipModelError(f"{name}: an open_clip checkpoint without {ex.args[0]}; the file is incomplete") from None
    vocab, ctx = int(tok.shape[0]), int(pos.shape[0])
    if vocab != BPE_VOCAB:
        raise ClipModelError(f"{name}: its text tower has a vocabulary of {vocab} tokens, not CLIP's {BPE_VOCAB}: it "
                             "needs another tokenizer (CLIPA / multilingual models), which VisionKit does not run")
    text_layers = _count(sd, rf"{re.escape(t)}transformer\.resblocks\.(\d+)\.")
    if text_width % 64:
        raise ClipModelError(f"{name}: the text tower is {text_width} wide, not a multiple of 64, so its attention heads "
                             "cannot be inferred; put open_clip's config next to it as open_clip_config.json")
    text_cfg = {
        "context_length": ctx, "vocab_size": vocab, "width": text_width, "heads": text_width // 64,
        "layers": text_layers,
        "mlp_ratio": _ratio(int(sd[f"{t}transformer.resblocks.0.mlp.c_fc.weight"].shape[0]), text_width),
    }
    if f"{t}transformer.resblocks.0.ls_1.gamma" in sd:
        text_cfg["ls_init_value"] = 1e-5  # the value is only an init; the weights overwrite it
    proj = sd.get(f"{t}text_projection")
    if proj is None and f"{t}text_projection.weight" in sd:
        proj = sd[f"{t}text_projection.weight"].T
        text_cfg["proj_bias"] = f"{t}text_projection.bias" in sd
    if proj is None:
        raise ClipModelError(f"{name}: the text tower has no projection; it is not a CLIP model VisionKit can run")
    embed_dim = int(proj.shape[1])

    if "visual.conv1.weight" in sd and "visual.class_embedding" in sd:  # ViT
        conv = sd["visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        n_pos = int(sd["visual.positional_embedding"].shape[0]) - 1
        grid = round(math.sqrt(n_pos))
        if grid * grid != n_pos:
            raise ClipModelError(f"{name}: the image tower has {n_pos} patch positions, not a square grid; "
                                 "put open_clip's config next to it as open_clip_config.json")
        head_width = _vision_head_width(width)
        vision_cfg = {
            "image_size": grid * patch, "layers": _count(sd, r"visual\.transformer\.resblocks\.(\d+)\."),
            "width": width, "patch_size": patch, "head_width": head_width,
            "mlp_ratio": _ratio(int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]), width),
        }
        if width % head_width:
            raise ClipModelError(f"{name}: the image tower is {width} wide, which {head_width}-wide attention heads do "
                                 "not divide; put open_clip's config next to it as open_clip_config.json")
        if "visual.transformer.resblocks.0.ls_1.gamma" in sd:
            vision_cfg["ls_init_value"] = 1e-5
        if "visual.ln_pre.weight" not in sd:
            vision_cfg["no_ln_pre"] = True
        if "visual.proj" in sd and int(sd["visual.proj"].shape[1]) != embed_dim:
            raise ClipModelError(f"{name}: image and text embeddings differ ({sd['visual.proj'].shape[1]} vs "
                                 f"{embed_dim}); not a CLIP model")
    elif "visual.layer1.0.conv1.weight" in sd and "visual.attnpool.positional_embedding" in sd:  # ModifiedResNet
        layers = [_count(sd, rf"visual\.layer{i}\.(\d+)\.") for i in (1, 2, 3, 4)]
        n_pos = int(sd["visual.attnpool.positional_embedding"].shape[0]) - 1
        grid = round(math.sqrt(n_pos))
        vision_cfg = {"image_size": grid * 32, "layers": layers,
                      "width": int(sd["visual.layer1.0.conv1.weight"].shape[0]), "patch_size": None, "head_width": 64}
        vis_out = int(sd["visual.attnpool.c_proj.weight"].shape[0])
        if vis_out != embed_dim:
            raise ClipModelError(f"{name}: image and text embeddings differ ({vis_out} vs {embed_dim}); "
                                 "not a CLIP model")
    else:
        raise ClipModelError(f"{name}: an open_clip checkpoint whose image tower VisionKit does not recognise "
                             "(neither ViT nor ModifiedResNet keys)")
    cfg = {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if t:
        cfg["custom_text"] = True
    if "logit_bias" in sd:
        cfg["init_logit_bias"] = 0.0
    return cfg


def matching_open_clip_name(cfg: dict) -> str | None:
    """The name of open_clip's shipped config with the same shapes (e.g. 'ViT-B-32'), if any."""
    keys_v = ("image_size", "layers", "width", "patch_size")
    keys_t = ("context_length", "vocab_size", "width", "layers")
    for name, shipped in _shipped_open_clip_configs().items():
        if name.endswith("-quickgelu") or shipped.get("embed_dim") != cfg.get("embed_dim"):
            continue
        v, t = shipped.get("vision_cfg", {}), shipped.get("text_cfg", {})
        if v.get("timm_model_name") or t.get("hf_model_name"):
            continue
        if all(_norm(v.get(k)) == _norm(cfg["vision_cfg"].get(k)) for k in keys_v) and \
                all(t.get(k, 77 if k == "context_length" else None) == cfg["text_cfg"].get(k) for k in keys_t):
            return name
    return None


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def describe_open_clip(cfg: dict) -> str:
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    match = matching_open_clip_name(cfg)
    if isinstance(v.get("layers"), (list, tuple)):
        vis = f"ResNet {list(v['layers'])} width {v['width']} @{v['image_size']}px"
    else:
        vis = f"ViT width {v['width']} x{v['layers']} patch {v['patch_size']} @{v['image_size']}px"
    act = "QuickGELU" if cfg.get("quick_gelu") else "GELU"
    return (f"open_clip {match + ' ' if match else ''}({vis}; text width {t['width']} x{t['layers']}, "
            f"context {t['context_length']}; embed {cfg['embed_dim']}; {act})")


# ================================================================ sidecar configs
def _read_json(path: str, name: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as ex:
        raise ClipModelError(f"{name}: {os.path.basename(path)} next to it cannot be read as JSON ({ex})") from None


def open_clip_sidecar(path: str) -> tuple[dict | None, dict]:
    """(model config, preprocess config) from `<stem>.json` or `open_clip_config.json` beside the file."""
    folder, base = os.path.split(path)
    stem = base.rsplit(".", 1)[0]
    for cand in (os.path.join(folder, stem + ".json"), os.path.join(folder, "open_clip_config.json")):
        if os.path.isfile(cand):
            data = _read_json(cand, base)
            if "model_cfg" in data:
                return data.get("model_cfg"), data.get("preprocess_cfg") or {}
            if "vision_cfg" in data and "text_cfg" in data:
                return data, data.get("preprocess_cfg") or {}
    return None, {}


def _name_says_quickgelu(path: str) -> bool:
    low = path.lower().replace("\\", "/")
    return "quickgelu" in low or "quick_gelu" in low or "openai" in low


# ================================================================ builders
def _torch_dtype(spec_dtype: str, device):
    import torch

    if spec_dtype == "fp16" or (spec_dtype == "auto" and getattr(device, "type", str(device)) == "cuda"):
        return torch.float16
    return torch.float32


def _load_checked(module, sd: dict, name: str, what: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False)
    except RuntimeError as ex:  # shape mismatches
        raise ClipModelError(f"{name}: the weights do not fit the {what} inferred from them "
                             f"({str(ex).splitlines()[-1].strip()[:300]}); put the model's config next to it "
                             "(open_clip_config.json) or report the file") from None
    missing = [k for k in missing if not k.endswith(("position_ids", "attn_mask"))]
    unexpected = [k for k in unexpected if not k.endswith(("position_ids", "attn_mask", "input_resolution",
                                                           "context_length", "vocab_size"))]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise ClipModelError(f"{name}: the weights do not fit the {what} inferred from them ({'; '.join(parts)}); "
                             "put the model's config next to it (open_clip_config.json) or report the file")


def _build_open_clip(sd: dict, path: str, activation: str, device, dtype):
    name = os.path.basename(path)
    side_cfg, side_pre = open_clip_sidecar(path)
    cfg = dict(side_cfg) if side_cfg else infer_open_clip_config(sd, name)
    if activation == "auto":
        quick = bool(cfg.get("quick_gelu")) if side_cfg else _name_says_quickgelu(path)
    else:
        quick = activation == "quick_gelu"
    cfg["quick_gelu"] = quick
    v = cfg.get("vision_cfg", {})
    t = cfg.get("text_cfg", {})
    if v.get("timm_model_name") or t.get("hf_model_name") or t.get("hf_tokenizer_name") or "multimodal_cfg" in cfg:
        raise ClipModelError(f"{name}: its config asks for timm / Hugging Face towers or tokenizers (SigLIP, CoCa, "
                             "multilingual …), which would need downloads; VisionKit's CLIP nodes run standard CLIP "
                             "models only")
    if int(t.get("vocab_size", BPE_VOCAB)) != BPE_VOCAB:
        raise ClipModelError(f"{name}: its config has a vocabulary of {t.get('vocab_size')} tokens, not CLIP's "
                             f"{BPE_VOCAB}; it needs another tokenizer, which VisionKit does not run")
    from open_clip.model import CLIP, CustomTextCLIP

    custom = bool(cfg.get("custom_text")) or "text.token_embedding.weight" in sd
    kwargs = {"embed_dim": int(cfg["embed_dim"]), "vision_cfg": dict(v), "text_cfg": dict(t), "quick_gelu": quick}
    if cfg.get("init_logit_bias") is not None or "logit_bias" in sd:
        kwargs["init_logit_bias"] = float(cfg.get("init_logit_bias") or 0.0)
    try:
        model = (CustomTextCLIP if custom else CLIP)(**kwargs)
    except Exception as ex:
        raise ClipModelError(f"{name}: open_clip could not build the architecture {describe_open_clip(cfg)} "
                             f"({str(ex)[:200]})") from None
    if custom and "text.token_embedding.weight" not in sd:
        from open_clip.model import convert_to_custom_text_state_dict

        sd = convert_to_custom_text_state_dict(sd)
    elif not custom and "text.token_embedding.weight" in sd:
        raise ClipModelError(f"{name}: a custom-text open_clip checkpoint whose config says otherwise")
    _load_checked(model, sd, name, describe_open_clip(cfg))
    model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    image_size = v.get("image_size", 224)
    size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (int(image_size), int(image_size))
    mode = side_pre.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash", "longest"):
        raise ClipModelError(f"{name}: resize_mode {mode!r} in its config is not shortest, squash or longest")
    mean = side_pre.get("mean") or OPENAI_MEAN
    std = side_pre.get("std") or OPENAI_STD
    mean = tuple(mean) if isinstance(mean, (list, tuple)) else (float(mean),) * 3
    std = tuple(std) if isinstance(std, (list, tuple)) else (float(std),) * 3
    pre = Preprocess(size=size, resize=min(size) if size[0] == size[1] else size, resize_mode=mode,
                     mean=tuple(map(float, mean)), std=tuple(map(float, std)),
                     interpolation="bilinear" if side_pre.get("interpolation") == "bilinear" else "bicubic",
                     crop_rounding="round")
    ctx = int(t.get("context_length", 77))
    return ClipModel("open_clip", model, _OpenClipTokenizer(ctx), pre, ctx, describe_open_clip(cfg))


# ---------------------------------------------------------------- transformers
def _hf_heads(width: int, vision: bool) -> int:
    hw = _vision_head_width(width) if vision else 64
    if width % hw:
        raise ClipModelError(f"a {'vision' if vision else 'text'} tower {width} wide: its attention heads cannot be "
                             "inferred; use the model's folder with its config.json")
    return width // hw


def infer_hf_config(sd: dict, name: str = "file") -> dict:
    """CLIPConfig keyword arguments read from a transformers CLIPModel state-dict."""
    try:
        tok = sd["text_model.embeddings.token_embedding.weight"]
        tpos = sd["text_model.embeddings.position_embedding.weight"]
        patch = sd["vision_model.embeddings.patch_embedding.weight"]
        vpos = sd["vision_model.embeddings.position_embedding.weight"]
        vproj = sd["visual_projection.weight"]
        tproj = sd["text_projection.weight"]
    except KeyError as ex:
        raise ClipModelError(f"{name}: a transformers CLIP state-dict without {ex.args[0]}; the file is incomplete or "
                             "another variant; use the model's folder with its config.json") from None
    t_hidden, v_hidden = int(tok.shape[1]), int(patch.shape[0])
    n = int(vpos.shape[0]) - 1
    grid = round(math.sqrt(n))
    if grid * grid != n:
        raise ClipModelError(f"{name}: {n} patch positions are not a square grid; use the model's folder")
    if int(vproj.shape[0]) != int(tproj.shape[0]):
        raise ClipModelError(f"{name}: image and text projections differ ({vproj.shape[0]} vs {tproj.shape[0]})")
    text = {"vocab_size": int(tok.shape[0]), "hidden_size": t_hidden,
                "intermediate_size": int(sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                "num_hidden_layers": _count(sd, r"text_model\.encoder\.layers\.(\d+)\."),
                "num_attention_heads": _hf_heads(t_hidden, False), "max_position_embeddings": int(tpos.shape[0]),
                "projection_dim": int(tproj.shape[0])}
    vision = {"hidden_size": v_hidden, "intermediate_size": int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                  "num_hidden_layers": _count(sd, r"vision_model\.encoder\.layers\.(\d+)\."),
                  "num_attention_heads": _hf_heads(v_hidden, True), "image_size": grid * int(patch.shape[-1]),
                  "patch_size": int(patch.shape[-1]), "num_channels": int(patch.shape[1]),
                  "projection_dim": int(vproj.shape[0])}
    if text["vocab_size"] != BPE_VOCAB:
        raise ClipModelError(f"{name}: a text vocabulary of {text['vocab_size']} tokens needs its own tokenizer files; "
                             "use the model's folder")
    return {"text_config": text, "vision_config": vision, "projection_dim": int(vproj.shape[0])}


def _map_hf_keys(sd: dict, model_keys: dict) -> dict:
    """Map a file's keys onto the model's (transformers renames keys between versions): exact names first,
    then a unique model key whose name ends with the file's (or the reverse) and whose shape is equal."""
    out, pending = {}, []
    for k, v in sd.items():
        if k in model_keys:
            out[k] = v
        else:
            pending.append((k, v))
    free = {k: s for k, s in model_keys.items() if k not in out}
    for k, v in pending:
        cands = [m for m, s in free.items() if (m.endswith("." + k) or k.endswith("." + m)) and tuple(s) == tuple(v.shape)]
        if len(cands) == 1:
            out[cands[0]] = v
            free.pop(cands[0])
        else:
            out[k] = v  # reported as unexpected by the strict check
    return out


def _hf_preprocess(folder: str | None, vision_cfg, name: str) -> Preprocess:
    image_size = int(vision_cfg.image_size)
    cfg = {}
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        cfg = _read_json(os.path.join(folder, "preprocessor_config.json"), name)
    crop = cfg.get("crop_size", image_size)
    if isinstance(crop, dict):
        crop_hw = (int(crop.get("height", image_size)), int(crop.get("width", image_size)))
    else:
        crop_hw = (int(crop), int(crop))
    do_crop = bool(cfg.get("do_center_crop", True))
    size = cfg.get("size", {"shortest_edge": image_size})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if "shortest_edge" in size:
        resize, mode = int(size["shortest_edge"]), "shortest"
    elif "height" in size and "width" in size:
        resize, mode = (int(size["height"]), int(size["width"])), "squash"
    else:
        resize, mode = image_size, "shortest"
    out_hw = crop_hw if do_crop else ((resize, resize) if isinstance(resize, int) else resize)
    if tuple(out_hw) != (image_size, image_size):
        raise ClipModelError(f"{name}: its preprocessor makes {out_hw[1]}x{out_hw[0]} images but the model takes "
                             f"{image_size}x{image_size}; fix preprocessor_config.json (crop_size)")
    resample = cfg.get("resample", 3)
    if resample not in (2, 3):
        log.warning("VisionKit: %s: resample=%s is approximated with bicubic", name, resample)
    return Preprocess(size=(image_size, image_size), resize=resize, resize_mode=mode,
                      mean=tuple(float(x) for x in cfg.get("image_mean", OPENAI_MEAN)),
                      std=tuple(float(x) for x in cfg.get("image_std", OPENAI_STD)),
                      interpolation="bilinear" if resample == 2 else "bicubic", crop_rounding="floor", crop=do_crop)


def _describe_hf(config, source: str) -> str:
    v, t = config.vision_config, config.text_config
    return (f"transformers CLIPModel {source}(ViT width {v.hidden_size} x{v.num_hidden_layers} patch {v.patch_size} "
            f"@{v.image_size}px; text width {t.hidden_size} x{t.num_hidden_layers}, context "
            f"{t.max_position_embeddings}; embed {config.projection_dim}; {t.hidden_act})")


def _build_hf_folder(folder: str, activation: str, device, dtype):
    name = os.path.basename(folder.rstrip(os.sep))
    cfg = _read_json(os.path.join(folder, "config.json"), name)
    mt = cfg.get("model_type", "")
    if mt != "clip":
        what = {
            "clip_vision_model": "a CLIP vision encoder without its text tower (it belongs in clip_vision, for "
                                 "IP-Adapter); zero-shot and ranking need the full CLIP model",
            "clip_text_model": "a CLIP text encoder only (for Stable Diffusion; ComfyUI keeps those in text_encoders); "
                               "zero-shot and ranking need the full CLIP model",
            "siglip": "a SigLIP model, which VisionKit's CLIP nodes do not run",
            "grounding-dino": "a Grounding DINO model: put it in grounding-dino",
        }.get(mt, f"a '{mt or 'unknown'}' model (config.json model_type), not a CLIPModel")
        if not mt and "_class_name" in cfg:
            what = f"a diffusers {cfg['_class_name']} folder, not a CLIPModel"
        raise ClipModelError(f"{name} is {what}. Put an open_clip checkpoint or a transformers CLIPModel folder "
                             "(config.json with model_type 'clip') into clip_models.")
    weights = [f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin")) and not f.startswith(".")
               and not f.startswith(("open_clip_", "training_args"))]
    if not weights:
        raise ClipModelError(f"{name}: the folder has config.json but no weights (model.safetensors or "
                             "pytorch_model.bin); download them into it")
    from transformers import CLIPConfig, CLIPModel

    try:
        config = CLIPConfig.from_pretrained(folder, local_files_only=True)
    except Exception as ex:
        raise ClipModelError(f"{name}: its config.json is not a CLIP config transformers can read ({_first_line(ex)})") \
            from None
    if activation != "auto":
        config.text_config.hidden_act = activation
        config.vision_config.hidden_act = activation
    try:
        model, info = CLIPModel.from_pretrained(folder, config=config, local_files_only=True, dtype=dtype,
                                                output_loading_info=True)
    except Exception as ex:
        raise ClipModelError(f"{name}: transformers could not load its weights ({_first_line(ex)}); the download may "
                             "be incomplete: download the folder again") from None
    bad = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    mism = info.get("mismatched_keys", [])
    if bad or mism:
        raise ClipModelError(f"{name}: its weights do not fit its config.json (missing {', '.join(map(str, bad[:5])) or '-'}; "
                             f"mismatched {', '.join(str(m[0] if isinstance(m, tuple) else m) for m in mism[:5]) or '-'}); "
                             "download the folder again")
    model.eval().requires_grad_(False).to(device=device)
    ctx = int(config.text_config.max_position_embeddings)
    tok = _hf_folder_tokenizer(folder, ctx) or _hf_bpe_tokenizer(ctx)
    return ClipModel("transformers", model, tok, _hf_preprocess(folder, config.vision_config, name), ctx,
                     _describe_hf(config, "folder "))


def _build_hf_file(sd: dict, path: str, activation: str, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    name = os.path.basename(path)
    side = os.path.join(os.path.dirname(path), name.rsplit(".", 1)[0] + ".json")
    side_cfg = _read_json(side, name) if os.path.isfile(side) else None
    if side_cfg is not None and side_cfg.get("model_type") == "clip":
        config = CLIPConfig(**{k: v for k, v in side_cfg.items() if k not in ("architectures", "transformers_version")})
    else:
        config = CLIPConfig(**infer_hf_config(sd, name))
        if activation == "auto":  # transformers' own default (OpenAI's CLIP); LAION models need "gelu"
            activation = "quick_gelu"
    if activation != "auto":
        config.text_config.hidden_act = activation
        config.vision_config.hidden_act = activation
    model = CLIPModel(config)
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = _map_hf_keys(sd, keys)
    _load_checked(model, sd, name, _describe_hf(config, "file "))
    model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    ctx = int(config.text_config.max_position_embeddings)
    return ClipModel("transformers", model, _hf_bpe_tokenizer(ctx), _hf_preprocess(None, config.vision_config, name),
                     ctx, _describe_hf(config, "file "))


def _first_line(ex: BaseException) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else type(ex).__name__)[:200]


def _build(spec: ModelSpec, device) -> Loaded:
    path = spec.path
    activation = spec.option("activation", "auto")
    dtype = _torch_dtype(spec.dtype, device)
    name = os.path.basename(path.rstrip(os.sep))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ClipModelError(f"{name} is a folder without config.json; a transformers CLIPModel folder holds "
                                 "config.json and model.safetensors")
        cm = _build_hf_folder(path, activation, device, dtype)
    else:
        if _torchscript_archive(path):
            raise ClipModelError(f"{name} is a TorchScript archive (OpenAI's original ViT-*.pt / RN*.pt release), "
                                 "which VisionKit does not load (it can run code); use the same model as open_clip "
                                 "weights (.safetensors / open_clip_pytorch_model.bin) or a transformers folder")
        try:
            sd = load_state_dict(path)
        except WeightsError as ex:
            raise ClipModelError(str(ex)) from None
        sd = _strip_prefixes(sd)
        try:
            family = classify_state_dict(sd)
        except ClipModelError:
            raise ClipModelError(describe_foreign(sd, name)) from None
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        if family == "open_clip":
            cm = _build_open_clip(sd, path, activation, device, dtype)
        else:
            cm = _build_hf_file(sd, path, activation, device, dtype)
    return Loaded(cm, meta={"family": cm.family, "arch": cm.description})


def clip_spec(path: str, dtype: str = "auto", activation: str = "auto") -> ModelSpec:
    if dtype not in DTYPES:
        raise ClipModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if activation not in ACTIVATIONS:
        raise ClipModelError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    return ModelSpec(kind="clip", path=path, build=_build, dtype=dtype, options=(("activation", activation),))


def load_clip_model(path: str, dtype: str = "auto", activation: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry); a broken file fails here."""
    spec = clip_spec(path, dtype, activation)
    return spec, get_cache().load(spec)


# ================================================================ labels and templates
_SEPARATORS = ",;|"


def parse_lines(text: str, what: str = "labels") -> list[str]:
    """One entry per line; blank lines and lines of only separators (, ; |) dropped; separators at the ends
    of a line stripped ("cat," → "cat"); duplicates dropped (the first one kept)."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ClipInputError(f"{what} must be text (one per line), not {type(text).__name__}")
    out: dict[str, None] = {}
    for line in text.splitlines():
        s = line.strip().strip(_SEPARATORS + " \t").strip()
        if s:
            out.setdefault(s, None)
    return list(out)


def parse_labels(text: str) -> list[str]:
    labels = parse_lines(text, "labels")
    if not labels:
        raise ClipInputError("no labels were given: write the candidate texts one per line (e.g. 'cat', 'dog', "
                             "'a car'); blank lines and lines of only , ; | are ignored")
    return labels


def parse_templates(text: str) -> list[str]:
    """Prompt templates, one per line, each with {} where the label goes; none = the label as it is.
    Several templates are an ensemble: a label's text embedding is the mean over its templates."""
    templates = parse_lines(text, "template")
    for t in templates:
        if "{}" not in t:
            raise ClipInputError(f"template {t!r} has no {{}} where the label goes; write e.g. 'a photo of {{}}.' "
                                 "(one template per line), or leave it empty to use the labels as they are")
    return templates


def apply_templates(labels: list[str], templates: list[str]) -> list[list[str]]:
    """The prompts of each label (one per template; the label itself when there is no template)."""
    if not templates:
        return [[label] for label in labels]
    return [[t.replace("{}", label) for t in templates] for label in labels]


# ================================================================ inference
IMAGE_CHUNK_CPU = 8
IMAGE_CHUNK_CUDA = 64
TEXT_CHUNK = 256


def image_chunk(model: ClipModel) -> int:
    device, _ = model.device_dtype()
    return IMAGE_CHUNK_CUDA if device.type == "cuda" else IMAGE_CHUNK_CPU


def image_features(model: ClipModel, images, progress=None):
    """Normalised image embeddings (B, D) of an IMAGE batch, in chunks, with a progress bar (ComfyUI's on the
    node; `progress(done, total)` is called too when given)."""
    import torch

    from .imageops import check_image

    images = check_image(images)
    device, dtype = model.device_dtype()
    n = images.shape[0]
    bar = host.Progress(n, progress)
    step = image_chunk(model)
    feats = []
    for i in range(0, n, step):
        host.throw_if_cancelled()
        # one image at a time through the resize (memory: one full-size image), then one network call
        px = torch.cat([preprocess_images(images[j:j + 1], model.preprocess, device=device, dtype=dtype)
                        for j in range(i, min(i + step, n))])
        feats.append(model.encode_pixels(px))
        bar.update(min(step, n - i))
    return torch.cat(feats)


def text_features(model: ClipModel, prompts: list[list[str]]):
    """Normalised text embeddings (L, D): per label the mean of its prompts' embeddings, renormalised."""
    import torch

    flat = [p for group in prompts for p in group]
    chunks = [model.encode_texts(flat[i:i + TEXT_CHUNK]) for i in range(0, len(flat), TEXT_CHUNK)]
    f = torch.cat(chunks)
    out, i = [], 0
    for group in prompts:
        g = f[i:i + len(group)].mean(dim=0)
        out.append(g / g.norm())
        i += len(group)
    return torch.stack(out)


@dataclass
class ZeroShotResult:
    labels: list[str]
    logits: object  # (B, L) float32
    probs: object  # (B, L)
    similarity: object  # (B, L) cosine similarity
    per_image: list = field(default_factory=list)  # [{"image", "best", "probability", "labels": [...]}]


def zero_shot(spec: ModelSpec, images, labels_text: str, template_text: str = "", progress=None) -> ZeroShotResult:
    """Zero-shot classification: for each image, the probability of each label (softmax over labels)."""
    import torch

    from .imageops import check_image

    labels = parse_labels(labels_text)
    templates = parse_templates(template_text)
    images = check_image(images)
    with get_cache().use(spec) as model:
        tf = text_features(model, apply_templates(labels, templates))
        imf = image_features(model, images, progress)
        sim = imf @ tf.to(imf.device).T
        logits = model.logit_scale().to(sim.device) * sim
        bias = model.logit_bias()
        if bias is not None:
            logits = logits + bias.to(sim.device)
    probs = torch.softmax(logits, dim=-1)
    sim, logits, probs = sim.cpu(), logits.cpu(), probs.cpu()
    res = ZeroShotResult(labels, logits, probs, sim)
    for b in range(probs.shape[0]):
        order = sorted(range(len(labels)), key=lambda j: (-float(probs[b, j]), j))
        rows = [{"label": labels[j], "probability": float(probs[b, j]), "similarity": float(sim[b, j]),
                 "logit": float(logits[b, j])} for j in order]
        res.per_image.append({"image": b, "best": rows[0]["label"], "probability": rows[0]["probability"],
                              "labels": rows})
    return res


@dataclass
class RankResult:
    order: list[int]  # image indexes, best first
    similarity: object  # (B,) cosine similarity of each image to the text
    logits: object  # (B,)
    probs: object  # (B,) softmax over the images: "which image is the text about"
    rows: list = field(default_factory=list)


def rank_images(spec: ModelSpec, images, text: str, template_text: str = "", progress=None) -> RankResult:
    """Rank a batch of images against one text (its templates averaged), best match first (ties: lower index)."""
    import torch

    from .imageops import check_image

    if not isinstance(text, str) or not text.strip():
        raise ClipInputError("the text to rank the images against is empty; describe what you look for, "
                             "e.g. 'a red car at night'")
    templates = parse_templates(template_text)
    images = check_image(images)
    prompt = " ".join(text.split())
    with get_cache().use(spec) as model:
        tf = text_features(model, apply_templates([prompt], templates))[0]
        imf = image_features(model, images, progress)
        sim = imf @ tf.to(imf.device)
        logits = model.logit_scale().to(sim.device) * sim
    probs = torch.softmax(logits, dim=0)
    sim, logits, probs = sim.cpu(), logits.cpu(), probs.cpu()
    order = sorted(range(sim.shape[0]), key=lambda i: (-float(sim[i]), i))
    rows = [{"rank": r, "index": i, "similarity": float(sim[i]), "probability": float(probs[i]),
             "logit": float(logits[i])} for r, i in enumerate(order)]
    return RankResult(order, sim, logits, probs, rows)
