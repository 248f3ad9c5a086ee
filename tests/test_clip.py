"""CLIP: the loader (open_clip checkpoints and transformers CLIPModel folders/files, architecture read from
the weights), preprocessing and logits compared with open_clip / transformers on the same tiny weights,
the zero-shot and rank nodes (probabilities, templates, batches, ranking), errors, the cache, a workflow.

Tolerances: logits from the same pixel tensor and tokens equal the library's within 1e-4 (CPU float32).
Preprocessing is ours on torch tensors; against the libraries' own pipelines (PIL / torchvision on 8-bit
images) the pixels differ by at most one 8-bit level (0.0151 after normalising with CLIP's std), and the
full-pipeline logits by at most PIPELINE_ATOL.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import import_pack
from vk_testing import tiny_clip as T

import_pack()
from visionkit_pack.models.perception import clip_files as CF  # noqa: E402
from visionkit_pack.models.perception import clip_inputs as CI  # noqa: E402
from visionkit_pack.models.perception import clip_zero_shot as Z  # noqa: E402
from visionkit_pack.models.core import imageops  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402

LOGIT_ATOL = 1e-4
ONE_LEVEL = 1 / 255 / min(CI.OPENAI_STD) + 1e-6  # one 8-bit step, normalised
PIPELINE_ATOL = 2e-2  # logits (scale 20) through the libraries' own PIL / torchvision preprocessing
LABELS = "a cat\na dog\na red car\na bowl of soup"


# ---------------------------------------------------------------- helpers
def smooth_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Photo-like IMAGE batch on exact 8-bit levels (what LoadImage gives)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 6 + 2, w // 6 + 2, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.04 * torch.rand(b, 3, h, w, generator=g)
    return (x.clamp(0, 1) * 255).round().div(255).permute(0, 2, 3, 1).contiguous()


def to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray((img.numpy() * 255).round().astype(np.uint8))


def clip_path(models_dir, name):
    return str(models_dir / "clip_models" / name)


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def load(nodes, name, **kw):
    (spec,) = nodes["VisionKitCLIPLoader"]().load(name, kw.get("dtype", "auto"), kw.get("activation", "auto"))
    return spec


def open_clip_reference(cfg: dict, path: str):
    from open_clip.model import CLIP
    from safetensors.torch import load_file

    c = {k: v for k, v in cfg.items() if k != "quick_gelu"}
    ref = CLIP(**c, quick_gelu=bool(cfg.get("quick_gelu")))
    sd = load_file(path) if path.endswith(".safetensors") else torch.load(path, weights_only=True)
    ref.load_state_dict(sd)
    return ref.eval()


def open_clip_logits(ref, pixels, tokens):
    with torch.no_grad():
        return ref.get_logits(pixels, tokens)[0]


def node_logits(spec, images, labels=LABELS, template=""):
    return Z.zero_shot(spec, images, labels, template).logits


# ---------------------------------------------------------------- open_clip
def test_open_clip_vit_matches_open_clip(nodes, models_dir):
    import open_clip

    spec = load(nodes, "tiny_openclip_vit.safetensors")
    entry = get_cache().load(spec)
    assert entry.meta["family"] == "open_clip"
    assert "ViT width 64 x2 patch 8 @32px" in entry.meta["arch"] and "context 32" in entry.meta["arch"]
    ref = open_clip_reference(T.OPENCLIP_VIT, clip_path(models_dir, "tiny_openclip_vit.safetensors"))
    images = smooth_images(2, 45, 61, seed=1)
    labels = Z.parse_labels(LABELS)
    tokens = open_clip.tokenize(labels, context_length=32)
    with get_cache().use(spec) as m:
        ids, _ = m.tokenize(labels)
        pixels = CI.preprocess_images(images, m.preprocess)
    assert torch.equal(ids, tokens)
    # the same pixel tensor and tokens: the library's logits
    ours = node_logits(spec, images)
    torch.testing.assert_close(ours, open_clip_logits(ref, pixels, tokens), atol=LOGIT_ATOL, rtol=0)
    # open_clip's own preprocessing of the same images (PIL): pixels within one 8-bit level
    tf = open_clip.image_transform(32, is_train=False)
    lib_pixels = torch.stack([tf(to_pil(im)) for im in images])
    assert (pixels - lib_pixels).abs().max() <= ONE_LEVEL
    assert (pixels - lib_pixels).abs().mean() < 1e-3
    torch.testing.assert_close(ours, open_clip_logits(ref, lib_pixels, tokens), atol=PIPELINE_ATOL, rtol=0)


def test_open_clip_hub_layout_reads_its_config(nodes, models_dir):
    """open_clip_config.json beside the weights: 16-wide heads, QuickGELU, layer scale, mean/std 0.5."""
    import open_clip

    name = "tiny-openclip-hub/open_clip_pytorch_model.bin"
    spec = load(nodes, name)
    ref = open_clip_reference(T.OPENCLIP_HUB, clip_path(models_dir, name))
    images = smooth_images(2, 70, 50, seed=2)
    labels = Z.parse_labels(LABELS)
    tokens = open_clip.tokenize(labels, context_length=20)
    with get_cache().use(spec) as m:
        assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.size == (48, 48)
        pixels = CI.preprocess_images(images, m.preprocess)
    torch.testing.assert_close(node_logits(spec, images), open_clip_logits(ref, pixels, tokens),
                               atol=LOGIT_ATOL, rtol=0)
    tf = open_clip.image_transform(48, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    lib_pixels = torch.stack([tf(to_pil(im)) for im in images])
    assert (pixels - lib_pixels).abs().max() <= 2 / 255 / 0.5 + 1e-6
    # the activation is not in the weights: forcing GELU is another model (and another cache entry)
    spec_gelu = load(nodes, name, activation="gelu")
    assert spec_gelu != spec
    assert (node_logits(spec_gelu, images) - node_logits(spec, images)).abs().max() > 1e-3


def test_open_clip_resnet_matches_open_clip(nodes, models_dir):
    import open_clip

    spec = load(nodes, "tiny_openclip_rn.safetensors")
    assert "ResNet [1, 1, 1, 1] width 8 @64px" in get_cache().load(spec).meta["arch"]
    ref = open_clip_reference(T.OPENCLIP_RN, clip_path(models_dir, "tiny_openclip_rn.safetensors"))
    images = smooth_images(2, 64, 80, seed=3)
    tokens = open_clip.tokenize(Z.parse_labels(LABELS), context_length=16)
    with get_cache().use(spec) as m:
        pixels = CI.preprocess_images(images, m.preprocess)
    torch.testing.assert_close(node_logits(spec, images), open_clip_logits(ref, pixels, tokens),
                               atol=LOGIT_ATOL, rtol=0)


def test_open_clip_config_inference_against_shipped_configs():
    """ViT-B-32 / ViT-L-14 / ViT-H-14 / RN50 shapes → the shipped configs' values (heads included)."""
    from open_clip.model import CLIP

    for name in ("ViT-B-32", "ViT-H-14", "RN50"):
        cfg = CF._shipped_open_clip_configs()[name]
        with torch.device("meta"):
            sd = CLIP(**cfg).state_dict()
        got = CF.infer_open_clip_config(sd, name)
        assert got["embed_dim"] == cfg["embed_dim"]
        for k in ("image_size", "layers", "width", "patch_size"):
            assert got["vision_cfg"][k] == cfg["vision_cfg"][k], (name, k)
        assert got["vision_cfg"]["head_width"] == cfg["vision_cfg"].get("head_width", 64)
        for k in ("context_length", "width", "heads", "layers"):
            assert got["text_cfg"][k] == cfg["text_cfg"][k], (name, k)
        assert CF.matching_open_clip_name(got) == name


# ---------------------------------------------------------------- transformers
def hf_reference_logits(model, tokenizer, labels, pixels):
    enc = tokenizer(labels, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
    return out.logits_per_image, enc["input_ids"]


def test_transformers_folder_matches_transformers(nodes, models_dir):
    """No tokenizer files in the folder: CLIP's BPE (ids equal open_clip's); default CLIP preprocessing."""
    import open_clip
    from transformers import CLIPImageProcessor, CLIPModel

    folder = clip_path(models_dir, "tiny-clip")
    spec = load(nodes, "tiny-clip")
    ref = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tok = T.bpe_tokenizer(77)
    images = smooth_images(2, 40, 57, seed=4)
    labels = Z.parse_labels(LABELS)
    with get_cache().use(spec) as m:
        assert m.family == "transformers"
        pixels = CI.preprocess_images(images, m.preprocess)
        ids, _ = m.tokenize(labels)
    ref_logits, ref_ids = hf_reference_logits(ref, tok, labels, pixels)
    assert torch.equal(ids, ref_ids)
    oc = open_clip.tokenize(labels)
    assert torch.equal(ids[:, :7][oc[:, :7] != 0], oc[:, :7][oc[:, :7] != 0])  # same ids as open_clip
    ours = node_logits(spec, images)
    torch.testing.assert_close(ours, ref_logits, atol=LOGIT_ATOL, rtol=0)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    lib_pixels = proc(images=[to_pil(im) for im in images], return_tensors="pt")["pixel_values"]
    assert (pixels - lib_pixels).abs().max() <= ONE_LEVEL
    torch.testing.assert_close(ours, hf_reference_logits(ref, tok, labels, lib_pixels)[0], atol=PIPELINE_ATOL,
                               rtol=0)


def test_transformers_folder_own_tokenizer_and_preprocessor(nodes, models_dir):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = clip_path(models_dir, "tiny-clip-tok")
    spec = load(nodes, "tiny-clip-tok")
    ref = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    proc = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    images = smooth_images(3, 50, 37, seed=5)
    labels = Z.parse_labels(LABELS)
    with get_cache().use(spec) as m:
        assert m.tokenizer._tok.name_or_path == folder  # the folder's own tokenizer files
        assert m.preprocess.resize == 40 and m.preprocess.mean == (0.5, 0.4, 0.3)
        pixels = CI.preprocess_images(images, m.preprocess)
    ref_logits, _ = hf_reference_logits(ref, tok, labels, pixels)
    ours = node_logits(spec, images)
    torch.testing.assert_close(ours, ref_logits, atol=LOGIT_ATOL, rtol=0)
    lib_pixels = proc(images=[to_pil(im) for im in images], return_tensors="pt")["pixel_values"]
    assert (pixels - lib_pixels).abs().max() <= 1 / 255 / 0.2 + 1e-6
    torch.testing.assert_close(ours, hf_reference_logits(ref, tok, labels, lib_pixels)[0], atol=PIPELINE_ATOL,
                               rtol=0)


def test_transformers_single_file_infers_config(nodes, models_dir):
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel

    name = "tiny_clip_hf_single.safetensors"
    spec = load(nodes, name)
    assert "ViT width 64 x2 patch 16 @32px" in get_cache().load(spec).meta["arch"]
    ref = CLIPModel(CLIPConfig(**T.HF_SINGLE)).eval()
    sd = {k: v for k, v in load_file(clip_path(models_dir, name)).items() if not k.endswith("position_ids")}
    ref.load_state_dict(sd, strict=False)
    images = smooth_images(2, 32, 32, seed=6)
    labels = Z.parse_labels(LABELS)
    with get_cache().use(spec) as m:
        pixels = CI.preprocess_images(images, m.preprocess)
    ref_logits, _ = hf_reference_logits(ref, T.bpe_tokenizer(24), labels, pixels)
    torch.testing.assert_close(node_logits(spec, images), ref_logits, atol=LOGIT_ATOL, rtol=0)


# ---------------------------------------------------------------- zero-shot node
def test_zero_shot_node_probabilities_labels_and_table(nodes):
    spec = load(nodes, "tiny_openclip_vit.safetensors")
    images = smooth_images(3, 40, 40, seed=7)
    node = nodes["VisionKitCLIPZeroShot"]()
    out = node.classify(spec, images, "a cat\n\n , \na dog\na cat\n;\na red car,\n", "a photo of {}.", show_top=2)
    best, probs, js = out["result"]
    rows = json.loads(js)
    assert len(best) == len(probs) == len(rows) == 3
    for b, r in enumerate(rows):
        assert [x["label"] for x in sorted(r["labels"], key=lambda x: x["label"])] == ["a cat", "a dog", "a red car"]
        p = [x["probability"] for x in r["labels"]]
        assert p == sorted(p, reverse=True) and abs(sum(p) - 1) < 1e-5
        assert r["best"] == r["labels"][0]["label"] == best[b] and r["probability"] == probs[b] == p[0]
    (text,) = out["ui"]["text"]
    assert text.startswith(f"image 0: {best[0]} (") and "… 1 more" in text
    # logits are softmax-consistent and the argmax is the best label
    res = Z.zero_shot(spec, images, "a cat\na dog\na red car", "a photo of {}.")
    torch.testing.assert_close(res.probs, torch.softmax(res.logits, -1))
    assert [res.labels[i] for i in res.probs.argmax(-1).tolist()] == best


def test_templates_are_applied_and_ensembled(nodes):
    spec = load(nodes, "tiny_openclip_vit.safetensors")
    images = smooth_images(2, 36, 36, seed=8)
    labels = ["a cat", "a dog", "a red car"]
    with get_cache().use(spec) as m:
        img = Z.image_features(m, images)
        scale = m.logit_scale()

        def expected(prompts_per_label):
            feats = []
            for prompts in prompts_per_label:
                f = m.encode_texts(prompts).mean(0)
                feats.append(f / f.norm())
            return scale * img @ torch.stack(feats).T

        plain = expected([[x] for x in labels])
        one = expected([[f"a photo of {x}."] for x in labels])
        two = expected([[f"a photo of {x}.", f"a drawing of {x}"] for x in labels])
    lab = "\n".join(labels)
    torch.testing.assert_close(node_logits(spec, images, lab, ""), plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(node_logits(spec, images, lab, "a photo of {}."), one, atol=1e-5, rtol=0)
    torch.testing.assert_close(node_logits(spec, images, lab, "a photo of {}.\na drawing of {}"), two,
                               atol=1e-5, rtol=0)
    assert (plain - one).abs().max() > 1e-3 and (one - two).abs().max() > 1e-3  # the templates matter


def test_batch_equals_single_images_in_chunks_with_progress(nodes, monkeypatch):
    spec = load(nodes, "tiny-clip")
    images = smooth_images(5, 30, 44, seed=9)
    monkeypatch.setattr(Z, "IMAGE_CHUNK_CPU", 2)
    calls = []
    with get_cache().use(spec) as m:
        batch = Z.image_features(m, images, progress=lambda d, t: calls.append((d, t)))
        singles = torch.cat([Z.image_features(m, images[i:i + 1]) for i in range(5)])
    assert calls == [(2, 5), (4, 5), (5, 5)]
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    # RGBA and grayscale images: alpha is dropped, gray becomes RGB
    rgba = torch.cat([images, torch.rand(5, 30, 44, 1)], dim=-1)
    torch.testing.assert_close(node_logits(spec, rgba), node_logits(spec, images), atol=1e-6, rtol=0)
    gray = images[..., :1]
    torch.testing.assert_close(node_logits(spec, gray), node_logits(spec, gray.expand(-1, -1, -1, 3)), atol=1e-6,
                               rtol=0)


# ---------------------------------------------------------------- rank node
def test_rank_images_node_orders_by_similarity(nodes, models_dir):
    import open_clip

    spec = load(nodes, "tiny_openclip_vit.safetensors")
    imgs = smooth_images(4, 40, 40, seed=10)
    imgs[3] = imgs[1]  # a tie: the lower index ranks first
    node = nodes["VisionKitCLIPRankImages"]()
    out = node.rank(spec, imgs, "a red\ncar", "", top_k=0)
    sorted_images, best_index, best_sim, js = out["result"]
    rows = json.loads(js)
    # reference similarities from open_clip on the same pixels and the same text
    ref = open_clip_reference(T.OPENCLIP_VIT, clip_path(models_dir, "tiny_openclip_vit.safetensors"))
    with get_cache().use(spec) as m:
        pixels = CI.preprocess_images(imgs, m.preprocess)
    with torch.no_grad():
        fi = ref.encode_image(pixels, normalize=True)
        ft = ref.encode_text(open_clip.tokenize(["a red car"], context_length=32), normalize=True)[0]
    sims = (fi @ ft).tolist()
    order = sorted(range(4), key=lambda i: (-round(sims[i], 5), i))
    assert [r["index"] for r in rows] == order and best_index == order[0]
    assert order.index(1) < order.index(3)
    assert [r["rank"] for r in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose([r["similarity"] for r in rows], [sims[i] for i in order], atol=1e-5)
    assert abs(best_sim - sims[order[0]]) < 1e-5
    assert abs(sum(r["probability"] for r in rows) - 1) < 1e-5
    assert torch.equal(sorted_images, imgs[order])
    assert out["ui"]["text"][0].startswith("images ranked against: a red\ncar")
    top2 = node.rank(spec, imgs, "a red car", "", top_k=2)["result"][0]
    assert torch.equal(top2, imgs[order[:2]])


# ---------------------------------------------------------------- errors
def test_input_errors_are_clear(nodes):
    spec = load(nodes, "tiny_openclip_vit.safetensors")
    img = smooth_images(1, 32, 32)
    zs, rk = nodes["VisionKitCLIPZeroShot"], nodes["VisionKitCLIPRankImages"]
    for labels in ("", "\n  \n", " , ;\n|\n"):
        with pytest.raises(Z.ClipInputError, match="no labels were given"):
            zs().classify(spec, img, labels, "a photo of {}.")
        assert "no labels" in zs.VALIDATE_INPUTS(labels=labels)
    with pytest.raises(Z.ClipInputError, match=r"has no \{\} where the label goes"):
        zs().classify(spec, img, "a cat", "a photo of")
    # the template is checked when the node runs (above): VALIDATE_INPUTS names only labels, so that ComfyUI
    # does not repeat a labels message on the template input
    assert zs.VALIDATE_INPUTS(labels="a cat") is True and zs.VALIDATE_INPUTS() is True
    with pytest.raises(Z.ClipInputError, match=r"has no \{\} where the label goes"):
        rk().rank(spec, img, "a cat", "a photo of")
    with pytest.raises(Z.ClipInputError, match="text to rank"):
        rk().rank(spec, img, "  \n", "")
    assert "empty" in rk.VALIDATE_INPUTS(text=" ")
    bad = img.clone()
    bad[0, 3, 3, 1] = float("nan")
    with pytest.raises(imageops.ImageInputError, match="NaN"):
        zs().classify(spec, bad, "a cat", "")
    with pytest.raises(imageops.ImageInputError, match="NaN"):
        rk().rank(spec, bad, "a cat", "")


@pytest.fixture()
def wrong_models(models_dir, tmp_path, monkeypatch):
    """A models root whose clip_models holds files that are not CLIP models."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "clip_models"
    d.mkdir()
    shutil.copy(models_dir / "sams" / "tiny_sam_vit.pth", d / "sam_vit_b.pth")
    shutil.copy(models_dir / "upscale_models" / "tiny_RealESRGAN_x4plus.pth", d / "RealESRGAN_x4plus.pth")
    full = load_file(str(models_dir / "clip_models" / "tiny-clip" / "model.safetensors"))
    save_file({k: v for k, v in full.items() if k.startswith(("vision_model.", "visual_projection"))},
              str(d / "clip_vision_h.safetensors"))
    save_file({k: v for k, v in full.items() if k.startswith("text_model.")}, str(d / "clip_l_text.safetensors"))
    data = open(clip_path(models_dir, "tiny_openclip_vit.safetensors"), "rb").read()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (d / "empty.pth").write_bytes(b"")
    vis = d / "vision-folder"
    vis.mkdir()
    (vis / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    return d


@pytest.mark.parametrize("name, words", [
    ("sam_vit_b.pth", ["not a CLIP model", "SAM (segment-anything)", "sams"]),
    ("RealESRGAN_x4plus.pth", ["not a CLIP model", "Real-ESRGAN", "upscale_models"]),
    ("clip_vision_h.safetensors", ["CLIP vision encoder (image tower only", "models/clip_vision",
                                   "need the full CLIP model"]),
    ("clip_l_text.safetensors", ["CLIP text encoder only", "text_encoders"]),
    ("truncated.safetensors", ["not a valid safetensors file", "download it again"]),
    ("empty.pth", ["empty (zero-byte) file"]),
    ("vision-folder", ["CLIP vision encoder without its text tower"]),
])
def test_wrong_files_say_what_they_are(nodes, wrong_models, name, words):
    with pytest.raises(CI.ClipModelError) as ei:
        load(nodes, name)
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert len(get_cache()) == 0


def test_loader_validation_and_fingerprint(nodes, models_dir, tmp_path, monkeypatch):
    loader = nodes["VisionKitCLIPLoader"]
    assert loader.VALIDATE_INPUTS(model_name="tiny-clip") is True
    assert "was not found in the clip_models folder" in loader.VALIDATE_INPUTS(model_name="nope.safetensors")
    assert "leave its model folder" in loader.VALIDATE_INPUTS(model_name="../sams/tiny_sam_vit.pth")
    d = tmp_path / "clip_models"
    d.mkdir()
    shutil.copy(clip_path(models_dir, "tiny_openclip_vit.safetensors"), d / "m.safetensors")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    assert loader.INPUT_TYPES()["required"]["model_name"][0] == ["m.safetensors"]
    before = loader.IS_CHANGED("m.safetensors")
    os.utime(d / "m.safetensors", ns=(1_000_000_000, 1_000_000_000))
    assert loader.IS_CHANGED("m.safetensors") != before


# ---------------------------------------------------------------- cache and metadata
def _digest(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_cached_model_is_shared_and_never_changed(nodes):
    cache = get_cache()
    spec = load(nodes, "tiny_openclip_vit.safetensors")
    assert load(nodes, "tiny_openclip_vit.safetensors") == spec
    assert len(cache) == 1 and cache.stats()["totals"]["misses"] == 1
    with cache.use(spec) as m:
        before, module = _digest(m.module), m.module
    images = smooth_images(3, 33, 47)
    nodes["VisionKitCLIPZeroShot"]().classify(spec, images, LABELS, "a photo of {}.")
    nodes["VisionKitCLIPRankImages"]().rank(spec, images, "a cat", "a photo of {}.", 2)
    with cache.use(spec) as m:
        assert m.module is module and _digest(m.module) == before
        assert not m.module.training and not any(p.requires_grad for p in m.module.parameters())
    assert len(cache) == 1 and cache.stats()["totals"]["misses"] == 1


def test_fp16_option_is_another_entry_close_to_fp32(nodes):
    images = smooth_images(2, 40, 50, seed=12)
    s32, s16 = load(nodes, "tiny-clip", dtype="fp32"), load(nodes, "tiny-clip", dtype="fp16")
    assert s32 != s16 and len(get_cache()) == 2
    with get_cache().use(s16) as m:
        assert m.device_dtype()[1] == torch.float16
    a, b = Z.zero_shot(s16, images, LABELS), Z.zero_shot(s32, images, LABELS)
    assert a.probs.dtype == torch.float32
    torch.testing.assert_close(a.probs, b.probs, atol=5e-3, rtol=0)


def test_node_metadata(pack, nodes):
    names = pack.NODE_DISPLAY_NAME_MAPPINGS
    assert names["VisionKitCLIPLoader"] == "VisionKit Load CLIP Model"
    assert names["VisionKitCLIPZeroShot"] == "VisionKit CLIP Zero-Shot Classify"
    assert names["VisionKitCLIPRankImages"] == "VisionKit CLIP Rank Images"
    for nid, cat in (("VisionKitCLIPLoader", "VisionKit/loaders"), ("VisionKitCLIPZeroShot", "VisionKit/perception"),
                     ("VisionKitCLIPRankImages", "VisionKit/perception")):
        cls = nodes[nid]
        assert cls.CATEGORY == cat and len(cls.DESCRIPTION) > 40
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        types = cls.INPUT_TYPES()
        for section in types.values():
            for inp, spec in section.items():
                assert spec[1].get("tooltip"), (nid, inp)
    assert nodes["VisionKitCLIPLoader"].RETURN_TYPES == ("VK_CLIP_MODEL",)
    assert nodes["VisionKitCLIPZeroShot"].OUTPUT_NODE and nodes["VisionKitCLIPRankImages"].OUTPUT_NODE
    assert "tiny-clip" in nodes["VisionKitCLIPLoader"].INPUT_TYPES()["required"]["model_name"][0]


# ---------------------------------------------------------------- workflow
def test_api_workflow_runs(nodes, tmp_path):
    from vk_testing.runner import WorkflowError, WorkflowRunner

    to_pil(smooth_images(1, 48, 64, seed=11)[0]).save(tmp_path / "photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}},
        "2": {"class_type": "VisionKitCLIPLoader",
              "inputs": {"model_name": "tiny_openclip_vit.safetensors", "dtype": "auto", "activation": "auto"}},
        "3": {"class_type": "VisionKitCLIPZeroShot",
              "inputs": {"clip_model": ["2", 0], "image": ["1", 0], "labels": "a cat\na dog",
                         "template": "a photo of {}.", "show_top": 5}},
        "4": {"class_type": "VisionKitCLIPRankImages",
              "inputs": {"clip_model": ["2", 0], "images": ["1", 0], "text": "a cat", "template": "", "top_k": 1}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    res = WorkflowRunner(nodes, tmp_path).run(prompt)
    best, probs, js = res.outputs["3"]
    assert best[0] in ("a cat", "a dog") and 0.0 < probs[0] <= 1.0
    assert json.loads(js)[0]["best"] == best[0]
    assert res.ui["3"]["text"][0].startswith(f"image 0: {best[0]}")
    assert res.outputs["4"][1] == 0 and res.previews["5"][0].shape == (1, 48, 64, 3)
    assert len(get_cache()) == 1  # one model, shared by both nodes
    bad = json.loads(json.dumps(prompt))
    bad["3"]["inputs"]["labels"] = " \n , "
    with pytest.raises(WorkflowError, match="no labels"):
        WorkflowRunner(nodes, tmp_path).run(bad)
