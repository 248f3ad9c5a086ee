"""Tiny transformers image models (issue 20) saved as model folders in the real layout (`save_pretrained`):

- `blip/tiny-blip/`: BlipForConditionalGeneration + BlipProcessor (BERT tokenizer files, image settings), the
  layout of Salesforce/blip-image-captioning-base. The BERT vocabulary is tiny and built here (no download):
  [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103 where BERT has them (BLIP's config refers to pad 0 and
  sep 102), real words in between, and BLIP's decoder start token [DEC] last (config bos_token_id).
- `dinov2/tiny-dinov2/`: Dinov2Model + its BitImageProcessor settings (shortest side, centre crop), the layout of
  facebook/dinov2-base.
- `vit/tiny-vit/`: ViTForImageClassification with ten named labels + ViTImageProcessor, the layout of
  google/vit-base-patch16-224.
"""
from __future__ import annotations

import json
from pathlib import Path

from .tiny_models import _perturb, _seeded, builder

WORDS = ["a", "an", "the", "of", "on", "in", "with", "and", "at", "photography", "photo", "picture", "painting",
         "lion", "lions", "dog", "cat", "person", "man", "woman", "house", "tree", "trees", "car", "grass", "sky",
         "field", "savanna", "sitting", "standing", "walking", "lying", "two", "red", "blue", "green", "yellow",
         "brown", "white", "black", "big", "small", "old", "cartoon", "drawing", "shirt", "striped", "sunset",
         "snow", "forest", "front", "next", "to", "is", "are", "ginger", "##bread", "##s", ",", ".", "'"]
LABELS = ["lion", "dog", "cat", "house", "tree", "car", "person", "shirt", "sky", "grass"]


def blip_vocab() -> list[str]:
    vocab = ["[PAD]"] + WORDS
    while len(vocab) < 100:
        vocab.append(f"[unused{len(vocab)}]")
    vocab = vocab[:100] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab.index("[CLS]") == 101 and vocab.index("[SEP]") == 102
    return vocab + ["[DEC]"]


def tiny_blip(seed: int = 20):
    from transformers import BlipConfig, BlipForConditionalGeneration

    _seeded(seed)
    vocab = blip_vocab()
    cfg = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab.index("[DEC]"), sep_token_id=102, pad_token_id=0, eos_token_id=102),
        projection_dim=16)
    model = BlipForConditionalGeneration(cfg).eval()
    _perturb(model, 0.05)
    return model


def save_blip(model, folder: Path) -> None:
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(blip_vocab()) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer", "bos_token": "[DEC]"}),
        encoding="utf-8")
    tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert tok.convert_tokens_to_ids(["[CLS]", "[SEP]", "[DEC]"]) == [101, 102, len(blip_vocab()) - 1]
    proc = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=proc, tokenizer=tok).save_pretrained(str(folder))


def tiny_dinov2(seed: int = 21):
    from transformers import Dinov2Config, Dinov2Model

    _seeded(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32,
                       patch_size=8)
    model = Dinov2Model(cfg).eval()
    _perturb(model, 0.05)
    return model


def save_dinov2(model, folder: Path) -> None:
    from transformers import BitImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      do_convert_rgb=True).save_pretrained(str(folder))


def tiny_vit(seed: int = 22):
    from transformers import ViTConfig, ViTForImageClassification

    _seeded(seed)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                    label2id={n: i for i, n in enumerate(LABELS)})
    model = ViTForImageClassification(cfg).eval()
    _perturb(model, 0.3)  # a head that tells the images apart (default init gives near-uniform probabilities)
    return model


def save_vit(model, folder: Path) -> None:
    from transformers import ViTImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))


@builder
def vision_models(root: Path) -> None:
    save_blip(tiny_blip(), root / "blip" / "tiny-blip")
    save_dinov2(tiny_dinov2(), root / "dinov2" / "tiny-dinov2")
    save_vit(tiny_vit(), root / "vit" / "tiny-vit")
