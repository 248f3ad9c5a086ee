"""Tiny CLIP fixtures beyond tiny_models.clip_models (the transformers folder clip_models/tiny-clip).

Each is built with the library's own classes and saved in the format users have:
- tiny_openclip_vit.safetensors: an open_clip CLIP (ViT) from a small custom config, GELU, 64-wide heads,
  context 32: everything the loader needs is in the tensors;
- tiny_openclip_rn.safetensors: an open_clip CLIP with a ModifiedResNet image tower (RN50 layout);
- tiny-openclip-hub/open_clip_pytorch_model.bin + open_clip_config.json: the layout of open_clip's hub
  repos, with what the tensors cannot tell (16-wide heads, QuickGELU, mean/std 0.5) in the config;
- tiny-clip-tok/: a transformers CLIPModel folder with its own tokenizer files and a preprocessor that
  resizes to 40 px before a 32 px crop, with its own mean/std;
- tiny_clip_hf_single.safetensors: a transformers CLIPModel state-dict without config (64-wide heads,
  QuickGELU as transformers' default), with the position_ids buffers older transformers saved.
The configs below are the ground truth the tests build their references from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_models import _perturb, _save_pth, _save_safetensors, _seeded, builder

OPENCLIP_VIT = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
OPENCLIP_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
OPENCLIP_HUB = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 48, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16,
                   "mlp_ratio": 2.0, "ls_init_value": 0.1},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPENCLIP_HUB_PREPROCESS = {"size": [48, 48], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bicubic", "resize_mode": "shortest"}
HF_TOK = {
    "text_config": {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "max_position_embeddings": 24, "projection_dim": 16},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8, "projection_dim": 16},
    "projection_dim": 16,
}
HF_TOK_PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 40},
    "resample": 3, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
    "do_convert_rgb": True,
}
HF_SINGLE = {
    "text_config": {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
                    "num_attention_heads": 1, "max_position_embeddings": 24, "projection_dim": 16},
    "vision_config": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 1,
                      "image_size": 32, "patch_size": 16, "projection_dim": 16},
    "projection_dim": 16,
}


def open_clip_model(cfg: dict, seed: int):
    """open_clip's own CLIP from a config dict (as the tests' reference builds it too)."""
    from open_clip.model import CLIP

    _seeded(seed)
    c = {k: v for k, v in cfg.items() if k != "quick_gelu"}
    model = CLIP(**c, quick_gelu=bool(cfg.get("quick_gelu")))
    _perturb(model, 0.02)
    with torch.no_grad():
        model.logit_scale.fill_(float(torch.log(torch.tensor(20.0))))  # a trained-like 1/0.05 temperature
    return model.eval()


def hf_model(cfg: dict, seed: int):
    from transformers import CLIPConfig, CLIPModel

    _seeded(seed)
    model = CLIPModel(CLIPConfig(**cfg))
    _perturb(model, 0.02)
    return model.eval()


def bpe_tokenizer(context_length: int):
    """A transformers CLIPTokenizer from open_clip's BPE file (vocab.json/merges.txt the NOTES way)."""
    import gzip
    import importlib.util
    import os
    import tempfile

    from transformers import CLIPTokenizer

    path = os.path.join(os.path.dirname(importlib.util.find_spec("open_clip").origin), "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(path) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + ["<|startoftext|>",
                                                                                          "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as fh:
            json.dump({v: i for i, v in enumerate(vocab)}, fh)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as fh:
            fh.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(d, local_files_only=True, model_max_length=context_length)


@builder
def clip_models_extra(root: Path) -> None:
    d = root / "clip_models"
    _save_safetensors(open_clip_model(OPENCLIP_VIT, 11).state_dict(), d / "tiny_openclip_vit.safetensors")
    _save_safetensors(open_clip_model(OPENCLIP_RN, 12).state_dict(), d / "tiny_openclip_rn.safetensors")

    hub = d / "tiny-openclip-hub"
    _save_pth(open_clip_model(OPENCLIP_HUB, 13).state_dict(), hub / "open_clip_pytorch_model.bin")
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPENCLIP_HUB,
                                                           "preprocess_cfg": OPENCLIP_HUB_PREPROCESS}, indent=1))

    tok_dir = d / "tiny-clip-tok"
    hf_model(HF_TOK, 14).save_pretrained(str(tok_dir), safe_serialization=True)
    bpe_tokenizer(HF_TOK["text_config"]["max_position_embeddings"]).save_pretrained(str(tok_dir))
    (tok_dir / "preprocessor_config.json").write_text(json.dumps(HF_TOK_PREPROCESSOR, indent=1))

    sd = hf_model(HF_SINGLE, 15).state_dict()
    sd["text_model.embeddings.position_ids"] = torch.arange(HF_SINGLE["text_config"]["max_position_embeddings"])[None]
    sd["vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    _save_safetensors(sd, d / "tiny_clip_hf_single.safetensors")
