"""CLIP files: what a state-dict is, and the open_clip / transformers architecture it implies (from shapes,
sidecar configs and open_clip's shipped configs). clip_model.py builds the model from what this reads;
the IP-Adapter vision encoder (models/sd/clip_vision.py) takes its head width from `vision_head_width`."""
from __future__ import annotations

import functools
import glob
import importlib.util
import json
import math
import os
import re
import zipfile

from ..core import identify
from .clip_inputs import BPE_VOCAB, ClipModelError

_has = identify.has_prefix  # any key starting with one of the prefixes (the registry's own helper)


# ================================================================ recognising files
def strip_prefixes(sd: dict) -> dict:
    """Drop wrapper prefixes that every key shares (DDP's `module.`, `model.`, `clip.`, `clip_model.`)."""
    for _ in range(3):
        for p in ("module.", "model.", "clip_model.", "clip.", "_orig_mod."):
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                break
        else:
            break
    return sd


def classify_state_dict(sd: dict) -> str:
    """'open_clip' | 'transformers' | a plain-words description of what else the file is (raises)."""
    if _has(sd, "visual.") and _has(sd, "token_embedding.", "text.", "transformer.resblocks."):
        return "open_clip"
    if _has(sd, "vision_model.") and _has(sd, "text_model."):
        return "transformers"
    raise ClipModelError(describe_foreign(sd))


def describe_foreign(sd: dict, name: str = "this file") -> str:
    what = identify.what_is(sd, exclude="clip")
    if what.startswith(("a CLIP vision encoder", "a CLIP text encoder")):
        what += "; zero-shot and ranking need the full CLIP model (image and text towers)"
    return (f"{name} is not a CLIP model (open_clip checkpoint or transformers CLIPModel); it looks like {what}. "
            "Put an open_clip checkpoint (.safetensors/.bin) or a transformers CLIPModel folder into clip_models.")


def is_torchscript_archive(path: str) -> bool:
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


def vision_head_width(width: int) -> int:
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
        raise ClipModelError(f"{name}: an open_clip checkpoint without {ex.args[0]}; the file is incomplete") from ex
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
        head_width = vision_head_width(width)
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
def read_json(path: str, name: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as ex:
        raise ClipModelError(f"{name}: {os.path.basename(path)} next to it cannot be read as JSON ({ex})") from ex


def open_clip_sidecar(path: str) -> tuple[dict | None, dict]:
    """(model config, preprocess config) from `<stem>.json` or `open_clip_config.json` beside the file."""
    folder, base = os.path.split(path)
    stem = base.rsplit(".", 1)[0]
    for cand in (os.path.join(folder, stem + ".json"), os.path.join(folder, "open_clip_config.json")):
        if os.path.isfile(cand):
            data = read_json(cand, base)
            if "model_cfg" in data:
                return data.get("model_cfg"), data.get("preprocess_cfg") or {}
            if "vision_cfg" in data and "text_cfg" in data:
                return data, data.get("preprocess_cfg") or {}
    return None, {}


def name_says_quickgelu(path: str) -> bool:
    low = path.lower().replace("\\", "/")
    return "quickgelu" in low or "quick_gelu" in low or "openai" in low


def _hf_heads(width: int, vision: bool) -> int:
    hw = vision_head_width(width) if vision else 64
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
                             "another variant; use the model's folder with its config.json") from ex
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


def map_hf_keys(sd: dict, model_keys: dict) -> dict:
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


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if (_has(keys, "visual.") and _has(keys, "token_embedding.", "text.",
                                                                      "transformer.resblocks.")) \
            or (_has(keys, "vision_model.") and _has(keys, "text_model.")):
        return f"a full CLIP model (image and text towers): {identify.goes('clip')}"
    return None


identify.register("clip", _what_file, order=100, place=identify.Place("clip_models", "VisionKitCLIPLoader"))
