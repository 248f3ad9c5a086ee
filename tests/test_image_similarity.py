"""Image similarity (DINOv2): the loader (transformers folder, offline, shared cache) and the Similarity / Rank
nodes, compared with the library's own embedding on the same tiny weights (AutoImageProcessor on the PIL image,
Dinov2Model, pooler_output or the patch-token mean) and torch's cosine similarity; pairs of batches, ranking
order and top-k, the readouts, wrong folders."""
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
from visionkit_pack.models.perception.image_similarity import SimilarityError  # noqa: E402

ATOL = 1e-5


def images(b: int, h: int = 44, w: int = 60, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, 6, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().div(255).permute(0, 2, 3, 1).contiguous()


def to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray((img.numpy() * 255).round().astype(np.uint8))


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture()
def spec(nodes):
    return nodes["VisionKitImageSimilarityLoader"]().load("tiny-dinov2", "auto")[0]


@pytest.fixture(scope="module")
def library(models_dir):
    from transformers import AutoImageProcessor, Dinov2Model

    folder = str(models_dir / "dinov2" / "tiny-dinov2")
    return Dinov2Model.from_pretrained(folder, local_files_only=True).eval(), \
        AutoImageProcessor.from_pretrained(folder, local_files_only=True)


def library_embedding(library, img: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
    model, processor = library
    with torch.no_grad():
        out = model(**processor(images=to_pil(img), return_tensors="pt"))
    return out.pooler_output[0] if pooling == "cls" else out.last_hidden_state[0, 1:].mean(dim=0)


@pytest.mark.parametrize("pooling", ["cls", "mean patch"])
def test_similarity_equals_library_embedding_and_cosine(nodes, spec, library, pooling):
    a, b = images(1, seed=1), images(1, 52, 40, seed=2)
    value, text, pairs = nodes["VisionKitImageSimilarity"]().compare(spec, a, b, pooling, "mean")["result"]
    want = torch.nn.functional.cosine_similarity(library_embedding(library, a[0], pooling),
                                                 library_embedding(library, b[0], pooling), dim=0)
    assert abs(value - float(want)) < ATOL
    assert abs(value) < 0.999, "two different images should not look identical to the model"
    assert json.loads(pairs) == [{"a": 0, "b": 0, "similarity": round(value, 6)}]
    assert f"{value:.4f}" in text and "one pair" in text
    same = nodes["VisionKitImageSimilarity"]().compare(spec, a, a.clone(), pooling, "mean")["result"][0]
    assert abs(same - 1.0) < 1e-5


@pytest.mark.parametrize("combine", ["mean", "max", "min"])
def test_batches_compare_every_pair(nodes, spec, library, combine):
    a, b = images(2, seed=3), images(3, seed=4)
    out = nodes["VisionKitImageSimilarity"]().compare(spec, a, b, "cls", combine)
    value, text, pairs = out["result"]
    fa = torch.stack([library_embedding(library, x) for x in a])
    fb = torch.stack([library_embedding(library, x) for x in b])
    m = torch.nn.functional.cosine_similarity(fa[:, None], fb[None], dim=-1)
    assert abs(value - float(getattr(m, combine)())) < ATOL
    got = {(p["a"], p["b"]): p["similarity"] for p in json.loads(pairs)}
    assert len(got) == 6 and all(abs(got[i, j] - float(m[i, j])) < ATOL for i in range(2) for j in range(3))
    assert out["ui"]["text"] == [text] and f"{combine} of 6 pairs" in text


def test_rank_sorts_the_batch_by_library_cosine(nodes, spec, library):
    ref = images(1, seed=5)
    batch = torch.cat([images(1, seed=s) for s in (6, 7, 5, 8)])  # index 2 is the reference itself
    out = nodes["VisionKitRankSimilarImages"]().rank(spec, ref, batch, "cls", 0)
    sorted_images, best, best_sim, scores = out["result"]
    r = library_embedding(library, ref[0])
    sims = [float(torch.nn.functional.cosine_similarity(r, library_embedding(library, x), dim=0)) for x in batch]
    order = sorted(range(4), key=lambda i: -sims[i])
    assert best == 2 == order[0] and abs(best_sim - 1.0) < 1e-5
    rows = json.loads(scores)
    assert [x["index"] for x in rows] == order and [x["rank"] for x in rows] == [0, 1, 2, 3]
    assert all(abs(x["similarity"] - sims[x["index"]]) < ATOL for x in rows)
    assert torch.equal(sorted_images, batch[order])
    assert "#1: image 2" in out["ui"]["text"][0]
    top2 = nodes["VisionKitRankSimilarImages"]().rank(spec, ref, batch, "cls", 2)["result"][0]
    assert torch.equal(top2, batch[order[:2]])


def test_several_references_use_their_mean_embedding(nodes, spec, library):
    refs, batch = images(2, seed=9), images(3, seed=10)
    rows = json.loads(nodes["VisionKitRankSimilarImages"]().rank(spec, refs, batch, "cls", 0)["result"][3])
    mean = torch.nn.functional.normalize(torch.stack([library_embedding(library, x) for x in refs]), dim=-1).mean(0)
    for x in rows:
        want = torch.nn.functional.cosine_similarity(mean, library_embedding(library, batch[x["index"]]), dim=0)
        assert abs(x["similarity"] - float(want)) < ATOL


def test_bad_settings_and_wrong_folders(nodes, spec, models_dir, tmp_path, monkeypatch):
    with pytest.raises(SimilarityError, match="pooling 'max' is not one of cls, mean patch"):
        nodes["VisionKitImageSimilarity"]().compare(spec, images(1), images(1), "max", "mean")
    extra = tmp_path / "extra"
    shutil.copytree(models_dir / "vit" / "tiny-vit", extra / "dinov2" / "a-vit")
    (extra / "dinov2" / "no-weights").mkdir(parents=True)
    shutil.copyfile(models_dir / "dinov2" / "tiny-dinov2" / "config.json", extra / "dinov2" / "no-weights" / "config.json")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", f"{models_dir}:{extra}")
    loader = nodes["VisionKitImageSimilarityLoader"]()
    with pytest.raises(VisionModelError, match="not a DINOv2 folder.*'vit'.*Image Labels Model"):
        loader.load("a-vit", "auto")
    with pytest.raises(VisionModelError, match="no weights .*download the folder again"):
        loader.load("no-weights", "auto")
    assert "was not found in the dinov2 folder" in nodes["VisionKitImageSimilarityLoader"].VALIDATE_INPUTS(
        model_name="dinov2-base")
