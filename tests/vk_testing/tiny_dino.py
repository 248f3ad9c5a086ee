"""Tiny Grounding DINO fixtures: a transformers folder, and the same weights in the original IDEA layout.

- `grounding-dino/tiny-grounding-dino/`: config.json + model.safetensors + tokenizer + processor config,
  what `save_pretrained` writes (the layout of IDEA-Research/grounding-dino-tiny on the hub);
- `grounding-dino/groundingdino_tiny_ogc.pth`: {"model": state_dict} with the key names, fused
  attention projections and duplicated shared heads of IDEA's groundingdino_swint_ogc.pth, written by
  `to_original_layout` below (its own code, independent of the loader's mapping), with `vocab.txt` and
  `tokenizer_config.json` beside it, as the downloader puts them.

The BERT vocabulary is tiny but keeps the ids the model hard-codes ([CLS]=101, [SEP]=102, "."=1012,
"?"=1029), so it has 1030 + a few words.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_models import _perturb, _seeded, builder

WORDS = ["the", "a", "left", "right", "lion", "dog", "cat", "person", "car", "tree", "big", "small", "red",
         "blue", "on", "of", "and", "in", "##s", ",", "!", "-", "'"]

SWIN = "model.backbone.conv_encoder.model.swin."
NORMS = "model.backbone.conv_encoder.model.hidden_states_norms."


def tiny_vocab() -> list[str]:
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    while len(vocab) < 1030:
        vocab.append(f"[unused{len(vocab) - 5}]")
    vocab[1012], vocab[1029] = ".", "?"
    return vocab + WORDS


def write_tokenizer_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")


def tiny_config(decoder_share: bool = True):
    from transformers import GroundingDinoConfig

    return GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                             window_size=4, image_size=64, out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", vocab_size=len(tiny_vocab()), hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=1, intermediate_size=64, max_position_embeddings=128),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=4, decoder_attention_heads=4, num_queries=20, max_text_len=256,
        decoder_bbox_embed_share=decoder_share)


def tiny_grounding_dino(seed: int = 7):
    from transformers import GroundingDinoForObjectDetection

    _seeded(seed)
    model = GroundingDinoForObjectDetection(tiny_config()).eval()
    with torch.no_grad():  # default inits leave the box heads at zero and the fusion scales at 1e-4
        for name, p in model.named_parameters():
            if "vision_param" in name or "text_param" in name:
                p.fill_(0.5)
    _perturb(model, 0.05)
    return model


def to_original_layout(model) -> dict:
    """The state-dict of a transformers GroundingDinoForObjectDetection in IDEA's original key layout."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict = {}
    used: set = set()

    def take(k):
        used.add(k)
        return sd[k]

    def copy(dst, src):
        out[dst] = take(src)

    def linear(dst, src):
        for p in ("weight", "bias"):
            copy(f"{dst}.{p}", f"{src}.{p}")

    def fused(dst, src, names):  # nn.MultiheadAttention / Swin qkv: one [q; k; v] matrix
        out[f"{dst}_weight" if dst.endswith("in_proj") else f"{dst}.weight"] = torch.cat(
            [take(f"{src}.{n}.weight") for n in names])
        out[f"{dst}_bias" if dst.endswith("in_proj") else f"{dst}.bias"] = torch.cat(
            [take(f"{src}.{n}.bias") for n in names])

    # ---- Swin backbone (backbone.0.*)
    bb = cfg.backbone_config
    linear("backbone.0.patch_embed.proj", SWIN + "embeddings.patch_embeddings.projection")
    linear("backbone.0.patch_embed.norm", SWIN + "embeddings.norm")
    for i, depth in enumerate(bb.depths):
        for j in range(depth):
            s, d = f"{SWIN}encoder.layers.{i}.blocks.{j}.", f"backbone.0.layers.{i}.blocks.{j}."
            linear(d + "norm1", s + "layernorm_before")
            copy(d + "attn.relative_position_bias_table",
                 s + "attention.relative_position_bias.relative_position_bias_table")
            w = bb.window_size
            out[d + "attn.relative_position_index"] = torch.zeros((w * w, w * w), dtype=torch.long)  # a buffer
            fused(d + "attn.qkv", s + "attention", ("q_proj", "k_proj", "v_proj"))
            linear(d + "attn.proj", s + "attention.o_proj")
            linear(d + "norm2", s + "layernorm_after")
            linear(d + "mlp.fc1", s + "mlp.fc1")
            linear(d + "mlp.fc2", s + "mlp.fc2")
        if i < len(bb.depths) - 1:
            copy(f"backbone.0.layers.{i}.downsample.reduction.weight",
                 f"{SWIN}encoder.layers.{i}.downsample.reduction.weight")
            linear(f"backbone.0.layers.{i}.downsample.norm", f"{SWIN}encoder.layers.{i}.downsample.norm")
    for stage in bb.out_indices:
        linear(f"backbone.0.norm{stage - 1}", f"{NORMS}stage{stage}")
    used.update(k for k in sd if k.startswith(SWIN + "layernorm."))  # transformers only; unused by the detector

    # ---- BERT (bert.*) with its pooler and position_ids buffer, as BertModelWarper saved them
    for k in [k for k in sd if k.startswith("model.text_backbone.")]:
        if k.endswith(("position_ids", "token_type_ids")):
            used.add(k)
            continue
        copy("bert." + k[len("model.text_backbone."):], k)
    hidden = cfg.text_config.hidden_size
    out["bert.pooler.dense.weight"] = torch.randn(hidden, hidden) * 0.02
    out["bert.pooler.dense.bias"] = torch.zeros(hidden)
    out["bert.embeddings.position_ids"] = torch.arange(cfg.text_config.max_position_embeddings)[None]
    linear("feat_map", "model.text_projection")

    for k in [k for k in sd if k.startswith("model.input_proj_vision.")]:
        copy("input_proj." + k[len("model.input_proj_vision."):], k)

    # ---- transformer.*
    copy("transformer.level_embed", "model.level_embed")
    copy("transformer.tgt_embed.weight", "model.query_position_embeddings.weight")
    linear("transformer.enc_output", "model.enc_output")
    linear("transformer.enc_output_norm", "model.enc_output_norm")
    for n in range(3):
        linear(f"transformer.enc_out_bbox_embed.layers.{n}", f"model.encoder_output_bbox_embed.layers.{n}")
    for i in range(cfg.encoder_layers):
        s, d = f"model.encoder.layers.{i}.", "transformer.encoder."
        for p in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            linear(f"{d}layers.{i}.self_attn.{p}", f"{s}deformable_layer.self_attn.{p}")
        linear(f"{d}layers.{i}.norm1", f"{s}deformable_layer.self_attn_layer_norm")
        linear(f"{d}layers.{i}.linear1", f"{s}deformable_layer.fc1")
        linear(f"{d}layers.{i}.linear2", f"{s}deformable_layer.fc2")
        linear(f"{d}layers.{i}.norm2", f"{s}deformable_layer.final_layer_norm")
        t = f"{d}text_layers.{i}."
        fused(t + "self_attn.in_proj", s + "text_enhancer_layer.self_attn", ("query", "key", "value"))
        linear(t + "self_attn.out_proj", s + "text_enhancer_layer.self_attn.out_proj")
        linear(t + "linear1", s + "text_enhancer_layer.fc1")
        linear(t + "linear2", s + "text_enhancer_layer.fc2")
        linear(t + "norm1", s + "text_enhancer_layer.layer_norm_before")
        linear(t + "norm2", s + "text_enhancer_layer.layer_norm_after")
        f = f"{d}fusion_layers.{i}."
        copy(f + "gamma_v", s + "fusion_layer.vision_param")
        copy(f + "gamma_l", s + "fusion_layer.text_param")
        linear(f + "layer_norm_v", s + "fusion_layer.layer_norm_vision")
        linear(f + "layer_norm_l", s + "fusion_layer.layer_norm_text")
        for o, n in (("v_proj", "vision_proj"), ("l_proj", "text_proj"), ("values_v_proj", "values_vision_proj"),
                     ("values_l_proj", "values_text_proj"), ("out_v_proj", "out_vision_proj"),
                     ("out_l_proj", "out_text_proj")):
            linear(f + "attn." + o, s + "fusion_layer.attn." + n)
    for i in range(cfg.decoder_layers):
        s, d = f"model.decoder.layers.{i}.", f"transformer.decoder.layers.{i}."
        for p in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            linear(f"{d}cross_attn.{p}", f"{s}encoder_attn.{p}")
        linear(d + "norm1", s + "encoder_attn_layer_norm")
        fused(d + "ca_text.in_proj", s + "encoder_attn_text", ("query", "key", "value"))
        linear(d + "ca_text.out_proj", s + "encoder_attn_text.out_proj")
        linear(d + "catext_norm", s + "encoder_attn_text_layer_norm")
        fused(d + "self_attn.in_proj", s + "self_attn", ("query", "key", "value"))
        linear(d + "self_attn.out_proj", s + "self_attn.out_proj")
        linear(d + "norm2", s + "self_attn_layer_norm")
        linear(d + "linear1", s + "fc1")
        linear(d + "linear2", s + "fc2")
        linear(d + "norm3", s + "final_layer_norm")
    linear("transformer.decoder.norm", "model.decoder.layer_norm")
    for n in range(2):
        linear(f"transformer.decoder.ref_point_head.layers.{n}", f"model.decoder.reference_points_head.layers.{n}")
    # the shared box head appears under every name that refers to it (state_dict does not deduplicate)
    for i in range(cfg.decoder_layers):
        for n in range(3):
            linear(f"bbox_embed.{i}.layers.{n}", f"bbox_embed.{i}.layers.{n}")
            linear(f"transformer.decoder.bbox_embed.{i}.layers.{n}", f"model.decoder.bbox_embed.{i}.layers.{n}")

    left = [k for k in sd if k not in used and not k.endswith("relative_position_index")]
    assert not left, f"to_original_layout left weights out: {left[:5]}"
    return {k: v.contiguous() for k, v in out.items()}


def save_folder(model, folder: Path) -> None:
    from transformers import BertTokenizer, GroundingDinoImageProcessor, GroundingDinoProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    write_tokenizer_files(folder)
    tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tok).save_pretrained(str(folder))


@builder
def grounding_dino(root: Path) -> None:
    d = root / "grounding-dino"
    model = tiny_grounding_dino()
    save_folder(model, d / "tiny-grounding-dino")
    d.mkdir(parents=True, exist_ok=True)
    torch.save({"model": to_original_layout(model)}, d / "groundingdino_tiny_ogc.pth")
    write_tokenizer_files(d)
