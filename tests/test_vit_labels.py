"""Image labels (ViT classifier): the loader (transformers folder, offline, shared cache) and the Labels node,
compared with transformers' own `pipeline("image-classification")` on the same tiny weights (labels, order and
probabilities of the top k), a batch, the readout, bad settings and wrong folders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import import_pack

import_pack()
from visionkit_pack.models.perception.hf_folder import VisionModelError  # noqa: E402
from visionkit_pack.models.perception.vit_labels import LabelsError  # noqa: E402


def images(b: int, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, h, w, 3, generator=g) * 255).round() / 255


def to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray((img.numpy() * 255).round().astype(np.uint8))


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def classifier(models_dir):
    from transformers import pipeline

    return pipeline("image-classification", model=str(models_dir / "vit" / "tiny-vit"), device="cpu")


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_labels_equal_the_image_classification_pipeline(nodes, classifier, top_k):
    (spec,) = nodes["VisionKitImageLabelsLoader"]().load("tiny-vit", "auto")
    img = images(2, seed=top_k)
    out = nodes["VisionKitImageLabels"]().label(spec, img, top_k)
    best, probs, js = out["result"]
    per_image = json.loads(js)
    for i in range(2):
        want = classifier(to_pil(img[i]), top_k=top_k)
        got = per_image[i]["labels"]
        assert [x["label"] for x in got] == [w["label"] for w in want]
        assert all(abs(x["probability"] - w["score"]) < 1e-5 for x, w in zip(got, want))
        assert best[i] == want[0]["label"] and abs(probs[i] - want[0]["score"]) < 1e-5
    assert per_image[0]["labels"] != per_image[1]["labels"], "the two images got the same answer: a weak check"
    table = out["ui"]["text"][0]
    assert f"image 1: {best[1]}" in table and len(table.splitlines()) == 2 * (1 + top_k)


def test_top_k_is_checked(nodes):
    cls = nodes["VisionKitImageLabels"]
    assert cls.VALIDATE_INPUTS(top_k=5) is True
    assert "top_k must be a whole number from 1 to" in cls.VALIDATE_INPUTS(top_k=0)
    (spec,) = nodes["VisionKitImageLabelsLoader"]().load("tiny-vit", "auto")
    with pytest.raises(LabelsError, match="top_k"):
        cls().label(spec, images(1), -2)
    # more than the model's classes: all of them
    res = json.loads(cls().label(spec, images(1), 50)["result"][2])
    assert len(res[0]["labels"]) == 10 and abs(sum(x["probability"] for x in res[0]["labels"]) - 1) < 1e-5


def test_wrong_folders_are_explained(nodes, models_dir, tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    shutil.copytree(models_dir / "blip" / "tiny-blip", extra / "vit" / "a-blip")
    headless = extra / "vit" / "vit-no-head"
    shutil.copytree(models_dir / "vit" / "tiny-vit", headless)
    cfg = json.loads((headless / "config.json").read_text())
    cfg["architectures"] = ["ViTModel"]
    (headless / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", f"{models_dir}:{extra}")
    loader = nodes["VisionKitImageLabelsLoader"]()
    with pytest.raises(VisionModelError, match="not a ViT image-classification folder.*BLIP captioning"):
        loader.load("a-blip", "auto")
    with pytest.raises(VisionModelError, match="not an image classifier.*google/vit-base-patch16-224"):
        loader.load("vit-no-head", "auto")
    assert "was not found in the vit folder" in nodes["VisionKitImageLabelsLoader"].VALIDATE_INPUTS(
        model_name="vit-base-patch16-224")
