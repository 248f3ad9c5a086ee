"""Grounding DINO's original IDEA checkpoints: architecture from the tensor shapes, and the key mapping
onto transformers' GroundingDinoForObjectDetection (grounding_dino.py loads them with it). Also the error
every Grounding DINO module raises."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..core.errors import VisionKitError

ORIGINAL_POINTS = 4  # sampling points per deformable head in every released checkpoint
BERT_HEAD_DIM = 64


class GroundingDinoError(VisionKitError):
    """A Grounding DINO model or input that cannot be used; the message says what was wrong and what to do."""


# ================================================================ original checkpoint: architecture
@dataclass(frozen=True)
class OriginalArch:
    """Everything about an original IDEA checkpoint that its tensor shapes tell."""

    embed_dim: int
    depths: tuple
    swin_heads: tuple
    window_size: int
    patch_size: int
    in_channels: int
    mlp_ratio: float
    out_indices: tuple  # transformers' numbering (stage1..4); original norm{i} = stage{i+1}
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    encoder_heads: int
    decoder_heads: int
    feature_levels: int
    num_queries: int
    bbox_embed_share: bool
    text_vocab: int
    text_hidden: int
    text_layers: int
    text_intermediate: int
    text_positions: int
    text_type_vocab: int

    @property
    def variant(self) -> str:
        if self.embed_dim == 96 and self.depths == (2, 2, 6, 2):
            return "Swin-T"
        if self.embed_dim == 128 and self.depths == (2, 2, 18, 2):
            return "Swin-B"
        return f"Swin (embed {self.embed_dim}, depths {list(self.depths)})"

    def describe(self) -> str:
        return (f"Grounding DINO {self.variant}, d_model {self.d_model}, {self.encoder_layers}+{self.decoder_layers} "
                f"layers, {self.num_queries} queries, BERT {self.text_layers}x{self.text_hidden}")


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _same_tensor(a, b) -> bool:
    """Equal values (a shared head is saved once per name that refers to it)."""
    if a is None or b is None:
        return False
    if a is b:
        return True
    if a.shape != b.shape or a.device.type == "meta" or b.device.type == "meta":
        return False
    return bool(a.equal(b))


def is_original_layout(sd: dict) -> bool:
    return ("backbone.0.patch_embed.proj.weight" in sd and "feat_map.weight" in sd
            and any(k.startswith("transformer.") for k in sd) and any(k.startswith("bert.") for k in sd))


def inspect_original(sd: dict, name: str = "checkpoint") -> OriginalArch:
    """Read the architecture of an original-layout state-dict from its shapes (see the module docstring)."""
    def need(key):
        if key not in sd:
            raise GroundingDinoError(f"{name} looks like an original Grounding DINO checkpoint but has no {key}; "
                                     "the file is incomplete or from another project")
        return sd[key]

    pe = need("backbone.0.patch_embed.proj.weight")
    embed_dim, in_ch, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[2])
    layers = _indices(sd, r"backbone\.0\.layers\.(\d+)\.blocks\.")
    if not layers:
        raise GroundingDinoError(f"{name}: no Swin layers (backbone.0.layers.N.blocks.M) found")
    depths, heads, windows = [], [], set()
    for i in layers:
        blocks = _indices(sd, rf"backbone\.0\.layers\.{i}\.blocks\.(\d+)\.")
        depths.append(len(blocks))
        table = need(f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table")
        heads.append(int(table.shape[1]))
        side = int(round(math.sqrt(int(table.shape[0]))))
        if side * side != int(table.shape[0]) or side % 2 == 0:
            raise GroundingDinoError(f"{name}: Swin relative position table of {table.shape[0]} rows is not "
                                     "(2 * window - 1)^2")
        windows.add((side + 1) // 2)
    if len(windows) != 1:
        raise GroundingDinoError(f"{name}: Swin layers use different window sizes {sorted(windows)}; not supported")
    fc1 = need("backbone.0.layers.0.blocks.0.mlp.fc1.weight")
    mlp_ratio = int(fc1.shape[0]) / embed_dim
    norms = _indices(sd, r"backbone\.0\.norm(\d+)\.weight")
    if not norms:
        raise GroundingDinoError(f"{name}: no backbone.0.normN output norms; cannot tell which Swin stages feed "
                                 "the detector")

    fm = need("feat_map.weight")
    d_model, text_hidden = int(fm.shape[0]), int(fm.shape[1])
    enc = _indices(sd, r"transformer\.encoder\.layers\.(\d+)\.")
    dec = _indices(sd, r"transformer\.decoder\.layers\.(\d+)\.")
    if not enc or not dec:
        raise GroundingDinoError(f"{name}: no transformer encoder/decoder layers found")
    levels = int(need("transformer.level_embed").shape[0])
    n_proj = len(_indices(sd, r"input_proj\.(\d+)\."))
    if n_proj != levels:
        raise GroundingDinoError(f"{name}: {n_proj} input projections for {levels} feature levels")

    def attn_heads(prefix):
        aw = int(need(f"{prefix}.attention_weights.weight").shape[0])
        so = int(need(f"{prefix}.sampling_offsets.weight").shape[0])
        per = levels * ORIGINAL_POINTS
        h = aw // per
        if h * per != aw or so != 2 * aw or h == 0 or d_model % h:
            raise GroundingDinoError(f"{name}: deformable attention {prefix} has {aw} attention weights for "
                                     f"{levels} levels; expected heads x {levels} x {ORIGINAL_POINTS} points")
        return h

    if "transformer.tgt_embed.weight" not in sd or "transformer.enc_output.weight" not in sd:
        raise GroundingDinoError(f"{name}: not a two-stage Grounding DINO with learned query embeddings "
                                 "(transformer.tgt_embed / transformer.enc_output missing); not supported")
    bbox = _indices(sd, r"bbox_embed\.(\d+)\.")
    share = bool(bbox) and all(
        _same_tensor(sd.get(k.replace("bbox_embed.0.", f"bbox_embed.{i}.", 1)), sd[k])
        for i in bbox[1:] for k in sd if k.startswith("bbox_embed.0."))

    we = need("bert.embeddings.word_embeddings.weight")
    if int(we.shape[1]) != text_hidden:
        raise GroundingDinoError(f"{name}: feat_map reads {text_hidden} text features but the BERT encoder makes "
                                 f"{int(we.shape[1])}")
    text_layers = _indices(sd, r"bert\.encoder\.layer\.(\d+)\.")
    return OriginalArch(
        embed_dim=embed_dim, depths=tuple(depths), swin_heads=tuple(heads), window_size=windows.pop(),
        patch_size=patch, in_channels=in_ch, mlp_ratio=mlp_ratio, out_indices=tuple(n + 1 for n in norms),
        d_model=d_model, encoder_layers=len(enc), decoder_layers=len(dec),
        encoder_ffn_dim=int(need("transformer.encoder.layers.0.linear1.weight").shape[0]),
        decoder_ffn_dim=int(need("transformer.decoder.layers.0.linear1.weight").shape[0]),
        encoder_heads=attn_heads("transformer.encoder.layers.0.self_attn"),
        decoder_heads=attn_heads("transformer.decoder.layers.0.cross_attn"),
        feature_levels=levels, num_queries=int(sd["transformer.tgt_embed.weight"].shape[0]),
        bbox_embed_share=share,
        text_vocab=int(we.shape[0]), text_hidden=int(we.shape[1]), text_layers=len(text_layers),
        text_intermediate=int(need("bert.encoder.layer.0.intermediate.dense.weight").shape[0]),
        text_positions=int(need("bert.embeddings.position_embeddings.weight").shape[0]),
        text_type_vocab=int(need("bert.embeddings.token_type_embeddings.weight").shape[0]),
    )


def original_config(arch: OriginalArch):
    """transformers' GroundingDinoConfig for an original checkpoint (the fixed parts as IDEA trained them)."""
    from transformers import GroundingDinoConfig

    text_heads = max(1, arch.text_hidden // BERT_HEAD_DIM) if arch.text_hidden % BERT_HEAD_DIM == 0 else 1
    backbone = dict(
        model_type="swin", image_size=384 if arch.window_size == 12 else 224, patch_size=arch.patch_size,
        num_channels=arch.in_channels, embed_dim=arch.embed_dim, depths=list(arch.depths),
        num_heads=list(arch.swin_heads), window_size=arch.window_size, mlp_ratio=arch.mlp_ratio,
        out_indices=list(arch.out_indices))
    text = dict(
        model_type="bert", vocab_size=arch.text_vocab, hidden_size=arch.text_hidden,
        num_hidden_layers=arch.text_layers, num_attention_heads=text_heads,
        intermediate_size=arch.text_intermediate, max_position_embeddings=arch.text_positions,
        type_vocab_size=arch.text_type_vocab)
    return GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=arch.d_model,
        encoder_layers=arch.encoder_layers, decoder_layers=arch.decoder_layers,
        encoder_ffn_dim=arch.encoder_ffn_dim, decoder_ffn_dim=arch.decoder_ffn_dim,
        encoder_attention_heads=arch.encoder_heads, decoder_attention_heads=arch.decoder_heads,
        num_feature_levels=arch.feature_levels, encoder_n_points=ORIGINAL_POINTS,
        decoder_n_points=ORIGINAL_POINTS, num_queries=arch.num_queries, two_stage=True,
        embedding_init_target=True, decoder_bbox_embed_share=arch.bbox_embed_share,
        two_stage_bbox_embed_share=False, max_text_len=256, query_dim=4, activation_function="relu")


# ================================================================ original checkpoint: key mapping
#
# Each original key gives a list of candidate transformers names (the current names first, then the
# names of older transformers releases); the first one the model has is used. Original keys that hold
# several transformers tensors (nn.MultiheadAttention's in_proj, Swin's qkv) are split in three.

_SWIN = "model.backbone.conv_encoder.model."
_DROP = (re.compile(r"^bert\.pooler\."), re.compile(r"\.relative_position_index$"),
         re.compile(r"^bert\.embeddings\.(position_ids|token_type_ids)$"))

_DEFORMABLE = {"self_attn.": "deformable_layer.self_attn.", "norm1.": "deformable_layer.self_attn_layer_norm.",
               "linear1.": "deformable_layer.fc1.", "linear2.": "deformable_layer.fc2.",
               "norm2.": "deformable_layer.final_layer_norm."}
_TEXT_ENHANCER = {"self_attn.out_proj.": "text_enhancer_layer.self_attn.out_proj.",
                  "linear1.": "text_enhancer_layer.fc1.", "linear2.": "text_enhancer_layer.fc2.",
                  "norm1.": "text_enhancer_layer.layer_norm_before.",
                  "norm2.": "text_enhancer_layer.layer_norm_after."}
_FUSION = {"gamma_v": "fusion_layer.vision_param", "gamma_l": "fusion_layer.text_param",
           "layer_norm_v.": "fusion_layer.layer_norm_vision.", "layer_norm_l.": "fusion_layer.layer_norm_text.",
           "attn.v_proj.": "fusion_layer.attn.vision_proj.", "attn.l_proj.": "fusion_layer.attn.text_proj.",
           "attn.values_v_proj.": "fusion_layer.attn.values_vision_proj.",
           "attn.values_l_proj.": "fusion_layer.attn.values_text_proj.",
           "attn.out_v_proj.": "fusion_layer.attn.out_vision_proj.",
           "attn.out_l_proj.": "fusion_layer.attn.out_text_proj."}
_DECODER = {"cross_attn.": "encoder_attn.", "norm1.": "encoder_attn_layer_norm.",
            "ca_text.out_proj.": "encoder_attn_text.out_proj.", "catext_norm.": "encoder_attn_text_layer_norm.",
            "self_attn.out_proj.": "self_attn.out_proj.", "norm2.": "self_attn_layer_norm.",
            "linear1.": "fc1.", "linear2.": "fc2.", "norm3.": "final_layer_norm."}
_SIMPLE = (("bert.", "model.text_backbone."), ("feat_map.", "model.text_projection."),
           ("input_proj.", "model.input_proj_vision."), ("transformer.level_embed", "model.level_embed"),
           ("transformer.tgt_embed.", "model.query_position_embeddings."),
           ("transformer.enc_output_norm.", "model.enc_output_norm."),
           ("transformer.enc_output.", "model.enc_output."),
           ("transformer.enc_out_bbox_embed.", "model.encoder_output_bbox_embed."),
           ("transformer.decoder.norm.", "model.decoder.layer_norm."),
           ("transformer.decoder.ref_point_head.", "model.decoder.reference_points_head."),
           ("transformer.decoder.bbox_embed.", "model.decoder.bbox_embed."),
           ("bbox_embed.", "bbox_embed."))


def _swin_block(rest: str) -> list[tuple[list[str], slice | None]] | None:
    """Swin block names: (candidate suffixes, part of the tensor) pairs, or None when unknown."""
    table = {
        "norm1.": (["layernorm_before."], None), "norm2.": (["layernorm_after."], None),
        "attn.proj.": (["attention.o_proj.", "attention.output.dense."], None),
        "mlp.fc1.": (["mlp.fc1.", "intermediate.dense."], None),
        "mlp.fc2.": (["mlp.fc2.", "output.dense."], None),
    }
    if rest == "attn.relative_position_bias_table":
        return [(["attention.relative_position_bias.relative_position_bias_table",
                  "attention.self.relative_position_bias_table"], None)]
    for src, (dsts, part) in table.items():
        if rest.startswith(src):
            p = rest[len(src):]
            return [([d + p for d in dsts], part)]
    if rest.startswith("attn.qkv."):
        p = rest[len("attn.qkv."):]
        return [([f"attention.{a}.{p}", f"attention.self.{b}.{p}"], i)
                for i, (a, b) in enumerate((("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")))]
    return None


def _targets(key: str):
    """[(candidate new names, third index or None)] for one original key; [] = drop it; None = unknown."""
    if any(rx.search(key) for rx in _DROP):
        return []
    m = re.match(r"backbone\.0\.(.*)$", key)
    if m:
        rest = m.group(1)
        pre = [_SWIN + "swin.", _SWIN]
        if rest.startswith("patch_embed.proj."):
            p = rest[len("patch_embed.proj."):]
            return [([x + "embeddings.patch_embeddings.projection." + p for x in pre], None)]
        if rest.startswith("patch_embed.norm."):
            return [([x + "embeddings.norm." + rest[len("patch_embed.norm."):] for x in pre], None)]
        mm = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)$", rest)
        if mm:
            parts = _swin_block(mm.group(3))
            if parts is None:
                return None
            base = f"encoder.layers.{mm.group(1)}.blocks.{mm.group(2)}."
            return [([x + base + s for x in pre for s in sufs], part) for sufs, part in parts]
        mm = re.match(r"layers\.(\d+)\.downsample\.(.*)$", rest)
        if mm:
            return [([x + f"encoder.layers.{mm.group(1)}.downsample.{mm.group(2)}" for x in pre], None)]
        mm = re.match(r"norm(\d+)\.(.*)$", rest)
        if mm:
            return [([_SWIN + f"hidden_states_norms.stage{int(mm.group(1)) + 1}.{mm.group(2)}"], None)]
        return None
    m = re.match(r"transformer\.encoder\.(layers|text_layers|fusion_layers)\.(\d+)\.(.*)$", key)
    if m:
        kind, i, rest = m.groups()
        base = f"model.encoder.layers.{i}."
        if kind == "text_layers" and rest.startswith("self_attn.in_proj_"):
            p = rest[len("self_attn.in_proj_"):]
            return [([f"{base}text_enhancer_layer.self_attn.{n}.{p}"], j)
                    for j, n in enumerate(("query", "key", "value"))]
        table = {"layers": _DEFORMABLE, "text_layers": _TEXT_ENHANCER, "fusion_layers": _FUSION}[kind]
        for src, dst in table.items():
            if rest == src or (src.endswith(".") and rest.startswith(src)):
                return [([base + dst + rest[len(src):]], None)]
        return None
    m = re.match(r"transformer\.decoder\.layers\.(\d+)\.(.*)$", key)
    if m:
        i, rest = m.groups()
        base = f"model.decoder.layers.{i}."
        for src, dst in (("self_attn.in_proj_", "self_attn."), ("ca_text.in_proj_", "encoder_attn_text.")):
            if rest.startswith(src):
                p = rest[len(src):]
                return [([f"{base}{dst}{n}.{p}"], j) for j, n in enumerate(("query", "key", "value"))]
        for src, dst in _DECODER.items():
            if rest.startswith(src):
                return [([base + dst + rest[len(src):]], None)]
        return None
    for src, dst in _SIMPLE:
        if key == src or key.startswith(src):
            return [([dst + key[len(src):]], None)]
    return None


def convert_original_state_dict(sd: dict, model_keys, name: str = "checkpoint") -> dict:
    """Rename an original-layout state-dict onto the keys of a transformers GroundingDinoForObjectDetection.

    `model_keys`: the keys of the target model's state_dict. Raises GroundingDinoError listing keys that
    fit nowhere (a layout this mapping does not know).
    """
    model_keys = set(model_keys)
    out, unknown = {}, []
    for key, tensor in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        targets = _targets(key)
        if targets is None:
            unknown.append(key)
            continue
        for candidates, part in targets:
            dst = next((c for c in candidates if c in model_keys), None)
            if dst is None:
                unknown.append(f"{key} (→ {candidates[0]})")
                break
            if part is None:
                out[dst] = tensor
            else:
                n = tensor.shape[0] // 3
                out[dst] = tensor[part * n:(part + 1) * n]
    if unknown:
        raise GroundingDinoError(
            f"{name}: {len(unknown)} weight(s) of this original Grounding DINO checkpoint fit no weight of "
            f"transformers' GroundingDinoForObjectDetection (e.g. {', '.join(unknown[:4])}); the file is from "
            "another variant or the installed transformers renamed its modules")
    return out


# ================================================================ recognising files
