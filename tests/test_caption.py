"""Captions (BLIP): the loader (transformers folder, offline, through the shared cache) and the Caption node,
compared with transformers' own recipe on the same tiny weights: BlipProcessor on the PIL image (+ prefix),
`model.generate` with the same settings, `processor.decode(..., skip_special_tokens=True)`. Greedy and beam
search, with and without a conditional prefix, a batch (each image as if alone); wrong folders and bad settings give clear
errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import import_pack

import_pack()
from visionkit_pack.models.perception import caption as CAP  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.perception.hf_folder import VisionModelError  # noqa: E402


def images(b: int, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    """An IMAGE batch on exact 8-bit levels (what Load Image gives)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, h, w, 3, generator=g) * 255).round() / 255


def to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray((img.numpy() * 255).round().astype(np.uint8))


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def library(models_dir):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    folder = str(models_dir / "blip" / "tiny-blip")
    model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    return model, BlipProcessor.from_pretrained(folder, local_files_only=True)


def library_caption(library, pil, prefix, max_new_tokens, num_beams) -> str:
    model, processor = library
    inputs = processor(images=pil, text=prefix or None, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    return processor.decode(ids[0], skip_special_tokens=True).strip()


@pytest.mark.parametrize("prefix,max_tokens,beams", [("", 12, 1), ("", 20, 3), ("a photography of", 8, 1),
                                                     ("A  photography of", 10, 4)])
def test_caption_equals_transformers_generate(nodes, library, prefix, max_tokens, beams):
    (spec,) = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "auto")
    img = images(2, seed=3)
    out = nodes["VisionKitCaption"]().caption(spec, img, prefix, max_tokens, beams)
    joined, per_image, report = out["result"]
    want = [library_caption(library, to_pil(img[i]), " ".join(prefix.split()), max_tokens, beams) for i in range(2)]
    assert per_image == want
    assert joined == "\n".join(want)
    assert all(w.strip() for w in want), "the tiny BLIP wrote nothing: the comparison would be empty"
    if prefix:
        assert all(c.startswith(" ".join(prefix.lower().split())) for c in per_image)
    rep = json.loads(report)
    assert [r["caption"] for r in rep["captions"]] == want and rep["num_beams"] == beams
    assert out["ui"]["text"][0].count("image ") == 2


def test_greedy_and_beam_search_are_both_the_librarys(nodes, library):
    (spec,) = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "fp32")
    img = images(1, seed=11)
    greedy = CAP.caption(spec, img, "", 15, 1)[0]
    beam = CAP.caption(spec, img, "", 15, 5)[0]
    assert greedy == library_caption(library, to_pil(img[0]), "", 15, 1)
    assert beam == library_caption(library, to_pil(img[0]), "", 15, 5)


def test_one_image_shows_its_caption_on_the_node(nodes):
    (spec,) = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "auto")
    out = nodes["VisionKitCaption"]().caption(spec, images(1), "", 10, 1)
    text = out["result"][0]
    assert out["ui"]["text"] == [text] and "\n" not in text and out["result"][1] == [text]


def test_the_model_is_loaded_once(nodes):
    a = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "auto")[0]
    b = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "auto")[0]
    assert a == b
    totals = get_cache().stats()["totals"]
    assert totals["misses"] == 1 and totals["hits"] >= 1 and totals["entries"] == 1


def test_settings_are_checked_before_the_model_runs(nodes):
    cls = nodes["VisionKitCaption"]
    # /prompt: ComfyUI's own min/max (the same bounds); no VALIDATE_INPUTS to repeat a message per input
    req = cls.INPUT_TYPES()["required"]
    assert (req["max_tokens"][1]["min"], req["max_tokens"][1]["max"]) == (1, CAP.MAX_TOKENS)
    assert (req["num_beams"][1]["min"], req["num_beams"][1]["max"]) == (1, CAP.MAX_BEAMS)
    assert not hasattr(cls, "VALIDATE_INPUTS")
    (spec,) = nodes["VisionKitCaptionLoader"]().load("tiny-blip", "auto")
    # run time (a linked value): checked before BLIP runs
    with pytest.raises(CAP.CaptionError, match="max_tokens must be a whole number from 1 to"):
        cls().caption(spec, images(1), "", 0, 3)
    with pytest.raises(CAP.CaptionError, match="1 = greedy"):
        cls().caption(spec, images(1), "", 30, 99)
    with pytest.raises(CAP.CaptionError, match="plus max_tokens .* shorten the prefix or lower max_tokens"):
        cls().caption(spec, images(1), "a photography of", 64, 1)


def test_wrong_folders_are_explained(nodes, models_dir, tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    shutil.copytree(models_dir / "dinov2" / "tiny-dinov2", extra / "blip" / "not-blip")
    no_tok = extra / "blip" / "no-tokenizer"
    shutil.copytree(models_dir / "blip" / "tiny-blip", no_tok)
    for f in ("vocab.txt", "tokenizer.json"):
        (no_tok / f).unlink()
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", f"{models_dir}:{extra}")
    loader = nodes["VisionKitCaptionLoader"]()
    with pytest.raises(VisionModelError, match="not a BLIP captioning folder.*DINOv2.*Image Similarity"):
        loader.load("not-blip", "auto")
    with pytest.raises(VisionModelError, match="lacks vocab.txt or tokenizer.json; copy it"):
        loader.load("no-tokenizer", "auto")
    msg = nodes["VisionKitCaptionLoader"].VALIDATE_INPUTS(model_name="blip-image-captioning-base")
    assert "was not found in the blip folder" in msg and "blip-image-captioning-base" in msg
    assert not [e for e in get_cache().entries() if e["in_use"]]
