"""Grounding DINO: loader (transformers folders, original IDEA checkpoints converted on load) and Detect,
compared with transformers' own processor and post-processing on the same tiny model."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

FOLDER = "tiny-grounding-dino"
ORIGINAL = "groundingdino_tiny_ogc.pth"
RES = 64  # shortest edge the tiny model sees (the images below are 48-64 px: fast on CPU)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is ~40x faster than fighting for two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def gd(pack):
    from visionkit_pack.models.perception import grounding_dino_detect

    return grounding_dino_detect


@pytest.fixture()
def original(pack):
    from visionkit_pack.models.perception import grounding_dino_original

    return grounding_dino_original


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def images(n=2, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, h, w, 3), generator=g) * 255).round() / 255


def load(nodes, name, dtype="fp32"):
    return nodes["VisionKitGroundingDINOLoader"]().load(name, dtype)[0]


def detect_node(nodes, spec, image, prompt="lion . dog", **kw):
    args = dict(box_threshold=0.35, text_threshold=0.25, max_detections=0, position="all", best_only=False,
                resolution=RES)
    args.update(kw)
    return nodes["VisionKitGroundingDINODetect"]().detect(spec, image, prompt, **args)


def reference(models_dir, image, text, box_threshold, text_threshold):
    """transformers alone: processor + model + post_process_grounded_object_detection, per image."""
    from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

    folder = str(models_dir / "grounding-dino" / FOLDER)
    proc = GroundingDinoProcessor.from_pretrained(folder, local_files_only=True)
    model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True).eval()
    out = []
    for im in image:
        pil = Image.fromarray((im.numpy() * 255).round().astype(np.uint8))
        inputs = proc(images=pil, text=text, size={"shortest_edge": RES, "longest_edge": 107}, return_tensors="pt")
        with torch.no_grad():
            raw = model(**inputs)
        res = proc.post_process_grounded_object_detection(raw, inputs["input_ids"], threshold=box_threshold,
                                                          text_threshold=text_threshold,
                                                          target_sizes=[pil.size[::-1]])[0]
        out.append(res)
    return out


# ------------------------------------------------------------------ the reference
@pytest.mark.parametrize("box_t, text_t", [(0.35, 0.25), (0.8, 0.6)])
def test_detect_equals_transformers_post_processing(pack, models_dir, nodes, box_t, text_t):
    img = images(2)
    spec = load(nodes, FOLDER)
    got, preview, mask, js = detect_node(nodes, spec, img, "Lion . dog", box_threshold=box_t, text_threshold=text_t)
    ref = reference(models_dir, img, "lion. dog.", box_t, text_t)
    assert len(got) == 2
    for g, r in zip(got, ref):
        order = torch.argsort(r["scores"], descending=True, stable=True)
        h, w = img.shape[1:3]
        rb = r["boxes"][order].clone()
        rb[:, 0::2] = rb[:, 0::2].clamp(0, w)
        rb[:, 1::2] = rb[:, 1::2].clamp(0, h)
        assert len(g) == len(r["scores"]) > 0
        assert torch.allclose(torch.tensor([e["box"] for e in g]), rb, atol=1e-4)
        assert torch.allclose(torch.tensor([e["score"] for e in g]), r["scores"][order], atol=1e-6)
        assert [e["label"] for e in g] == [r["text_labels"][i] for i in order.tolist()]
    assert len({e["label"] for e in got[0] + got[1]}) > 1  # thresholds matter: not every label is the same
    assert json.loads(js) == got
    assert preview.shape == (2, 48, 64, 3) and mask.shape == (2, 48, 64)
    assert (mask.sum(dim=(1, 2)) > 0).all()


def test_pixel_values_equal_the_image_processor(pack, models_dir, nodes, gd):
    from transformers import GroundingDinoProcessor

    spec = load(nodes, FOLDER)
    img = images(1, 50, 70)[0]
    pil = Image.fromarray((img.numpy() * 255).round().astype(np.uint8))
    proc = GroundingDinoProcessor.from_pretrained(str(models_dir / "grounding-dino" / FOLDER), local_files_only=True)
    want = proc(images=pil, text="a.", return_tensors="pt")["pixel_values"]  # default 800 / 1333
    with pack.models.core.cache.get_cache().use(spec) as bundle:
        chw = torch.from_numpy((img.numpy() * 255).round().astype(np.uint8)).permute(2, 0, 1)
        got = bundle.image_processor(images=[chw], return_tensors="pt")["pixel_values"]
    assert got.shape == want.shape == (1, 3, 800, 1120)
    assert torch.equal(got, want)


# ------------------------------------------------------------------ original checkpoints
def test_original_checkpoint_round_trip_gives_equal_outputs(pack, nodes, gd):
    """The tiny transformers model written in IDEA's key layout (tiny_dino.to_original_layout) and loaded
    back through the loader gives the same raw outputs and boxes as the transformers folder."""
    a, b = load(nodes, FOLDER), load(nodes, ORIGINAL)
    cache = pack.models.core.cache.get_cache()
    img = images(1)
    chw = torch.from_numpy((img[0].numpy() * 255).round().astype(np.uint8)).permute(2, 0, 1)
    raw = []
    for spec in (a, b):
        with cache.use(spec) as bundle:
            raw.append(gd.run_raw(bundle, chw, gd.encode_prompt(bundle, "the left lion . dog"), RES))
    assert torch.allclose(raw[0].logits, raw[1].logits, atol=1e-5)
    assert torch.allclose(raw[0].pred_boxes, raw[1].pred_boxes, atol=1e-6)
    assert torch.isfinite(raw[0].pred_boxes).all()
    got_a = detect_node(nodes, a, images(2))[0]
    got_b = detect_node(nodes, b, images(2))[0]
    assert got_a == got_b and sum(map(len, got_a)) > 0
    entries = {e["path"].rsplit("/", 1)[-1]: e for e in cache.entries()}
    assert entries[ORIGINAL]["meta_format"] == "original checkpoint (converted)"
    assert entries[FOLDER]["meta_format"] == "transformers folder"


def test_architecture_comes_from_shapes_not_the_file_name(pack, models_dir, nodes, tmp_path, monkeypatch):
    d = tmp_path / "grounding-dino"
    d.mkdir()
    src = models_dir / "grounding-dino"
    shutil.copy(src / ORIGINAL, d / "groundingdino_swinb_cogcoor.pth")
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / f, d / f)
    from safetensors.torch import save_file

    sd = torch.load(src / ORIGINAL, weights_only=True)["model"]
    save_file(sd, str(d / "groundingdino_swint_ogc.safetensors"))  # same weights, safetensors container
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    cache = pack.models.core.cache.get_cache()
    for name in ("groundingdino_swinb_cogcoor.pth", "groundingdino_swint_ogc.safetensors"):
        spec = load(nodes, name)
        meta = next(e for e in cache.entries() if e["path"] == spec.path)
        assert meta["meta_variant"] == "Swin (embed 32, depths [1, 1, 2, 1])"  # not "Swin-B" from the name
        with cache.use(spec) as bundle:
            cfg = bundle.model.config
            assert (cfg.d_model, cfg.encoder_attention_heads, cfg.decoder_layers, cfg.num_queries) == (32, 4, 2, 20)
            assert cfg.decoder_bbox_embed_share is True
            assert list(cfg.backbone_config.num_heads) == [1, 2, 4, 8] and cfg.backbone_config.window_size == 4


@pytest.mark.parametrize("variant, kwargs, heads", [
    ("Swin-T", {}, (3, 6, 12, 24)),
    ("Swin-B", dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                    image_size=384), (4, 8, 16, 32)),
])
def test_full_size_swin_t_and_swin_b_are_recognised(pack, original, variant, kwargs, heads):
    """Real-size layouts, built on the meta device (shapes only, no memory)."""
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    from vk_testing.tiny_dino import to_original_layout

    cfg = GroundingDinoConfig(backbone_config=dict(model_type="swin", out_indices=[2, 3, 4], **kwargs))
    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(cfg)
    sd = to_original_layout(model)
    arch = original.inspect_original(sd, "x.pth")
    assert arch.variant == variant and arch.swin_heads == heads
    assert (arch.d_model, arch.encoder_heads, arch.decoder_heads, arch.num_queries) == (256, 8, 8, 900)
    assert (arch.encoder_layers, arch.decoder_layers, arch.feature_levels, arch.text_hidden) == (6, 6, 4, 768)
    new = original.original_config(arch)
    assert new.text_config.num_attention_heads == 12 and new.backbone_config.window_size == cfg.backbone_config.window_size
    with torch.device("meta"):
        target = GroundingDinoForObjectDetection(new).state_dict()
    mapped = original.convert_original_state_dict(sd, target.keys(), "x.pth")
    assert all(tuple(v.shape) == tuple(target[k].shape) for k, v in mapped.items())
    unfilled = [k for k in target if k not in mapped and ".swin.layernorm." not in k]
    assert unfilled == []


# ------------------------------------------------------------------ errors
def _models_root_with(tmp_path, monkeypatch, files: dict):
    d = tmp_path / "grounding-dino"
    d.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        dst = d / name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    return d


@pytest.mark.parametrize("src, words", [
    ("sams/tiny_sam_vit.pth", "SAM (segment-anything) checkpoint"),
    ("upscale_models/tiny_RealESRGAN_x4plus.pth", "Real-ESRGAN upscaler (RRDBNet x4"),
])
def test_wrong_file_says_what_it_looks_like(pack, models_dir, nodes, original, tmp_path, monkeypatch, src, words):
    _models_root_with(tmp_path, monkeypatch, {"groundingdino_swint_ogc.pth": models_dir / src})
    with pytest.raises(original.GroundingDinoError) as ei:
        load(nodes, "groundingdino_swint_ogc.pth")
    assert words in str(ei.value) and "not a Grounding DINO model" in str(ei.value)


def test_missing_tokenizer_files_name_the_folder_and_files(pack, models_dir, nodes, original, tmp_path, monkeypatch):
    d = _models_root_with(tmp_path, monkeypatch, {ORIGINAL: models_dir / "grounding-dino" / ORIGINAL})
    with pytest.raises(original.GroundingDinoError) as ei:
        load(nodes, ORIGINAL)
    msg = str(ei.value)
    assert str(d) in msg and "vocab.txt" in msg and "tokenizer_config.json" in msg
    assert len(pack.models.core.cache.get_cache()) == 0
    # a transformers folder without its tokenizer files
    folder = _models_root_with(tmp_path, monkeypatch, {"dino-folder": models_dir / "grounding-dino" / FOLDER})
    folder = folder / "dino-folder"
    for f in ("vocab.txt", "tokenizer.json"):
        (folder / f).unlink()
    with pytest.raises(original.GroundingDinoError, match="no tokenizer files"):
        load(nodes, "dino-folder")


def test_wrong_tokenizer_and_wrong_folder_type(pack, models_dir, nodes, original, tmp_path, monkeypatch):
    d = _models_root_with(tmp_path, monkeypatch, {ORIGINAL: models_dir / "grounding-dino" / ORIGINAL})
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "."]) + "\n")
    with pytest.raises(original.GroundingDinoError, match=r"not bert-base-uncased's.*\[CLS\]=2"):
        load(nodes, ORIGINAL)
    bert = d / "bert-base-uncased"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(original.GroundingDinoError, match="model_type 'bert', a BERT text model"):
        load(nodes, "bert-base-uncased")


def test_bad_prompts_and_thresholds(pack, nodes, gd, original):
    node = nodes["VisionKitGroundingDINODetect"]
    for bad in ("", "   ", " . . ", "\n.\n", ", ;"):
        assert "names nothing to find" in node.VALIDATE_INPUTS(prompt=bad)
    assert node.VALIDATE_INPUTS(prompt="lion . dog") is True
    assert node.VALIDATE_INPUTS(prompt=None) is True  # a linked prompt is checked when it arrives
    # the numbers and position: ComfyUI's min/max and list at /prompt (VALIDATE_INPUTS names only the prompt, so
    # ComfyUI does not repeat a prompt message on them), and again when the node runs (linked values, NaN)
    req = node.INPUT_TYPES()["required"]
    for k in ("box_threshold", "text_threshold"):
        assert (req[k][1]["min"], req[k][1]["max"]) == (0.0, 1.0)
    assert req["max_detections"][1]["min"] == 0 and node.INPUT_TYPES()["optional"]["resolution"][1]["min"] == 64
    spec = load(nodes, FOLDER)
    img = torch.rand(1, 32, 32, 3)
    for kw, says in (({"box_threshold": 1.5}, "box_threshold must be a number from 0 to 1"),
                     ({"text_threshold": float("nan")}, "text_threshold must be a number from 0 to 1"),
                     ({"position": "middle"}, "not one of"),
                     ({"max_detections": -2}, "max_detections must be a whole number >= 0"),
                     ({"resolution": 5000}, "resolution must be a whole number from 64 to 2048")):
        with pytest.raises(ValueError, match=re.escape(says)):
            node().detect(spec, img, "cat .", **kw)
    loader = nodes["VisionKitGroundingDINOLoader"]
    assert loader.VALIDATE_INPUTS(model_name=FOLDER) is True
    assert "was not found" in loader.VALIDATE_INPUTS(model_name="nope.pth")
    assert loader.INPUT_TYPES()["required"]["dtype"][0] == ["auto", "fp32", "fp16", "bf16"]  # ComfyUI's list check
    assert loader.VALIDATE_INPUTS(model_name=None) is True  # linked inputs arrive as None
    assert gd.normalize_prompt("  The LEFT lion ") == "the left lion."
    assert gd.normalize_prompt("lion . dog\ncat") == "lion. dog. cat."
    spec = load(nodes, FOLDER)
    with pytest.raises(original.GroundingDinoError, match="names nothing to find"):
        detect_node(nodes, spec, images(1), " . ")
    with pytest.raises(original.GroundingDinoError, match="reads at most 128"):
        detect_node(nodes, spec, images(1), "lion " * 200)


# ------------------------------------------------------------------ outcomes
def test_zero_detections_is_a_normal_result(pack, nodes):
    spec = load(nodes, FOLDER)
    img = images(2)
    found, preview, mask, js = detect_node(nodes, spec, img, box_threshold=1.0)
    assert found == [[], []] and json.loads(js) == [[], []]
    assert mask.shape == (2, 48, 64) and not mask.any()
    assert preview.shape == (2, 48, 64, 3)
    note = preview[:, :10, :40]
    assert not torch.equal(note, img[:, :10, :40]) and (note < 0.01).float().mean() > 0.5  # the "no detection" note
    assert torch.equal(preview[:, 30:, 45:], img[:, 30:, 45:])  # the rest is the image


def test_batch_maps_over_images_and_rgba_is_accepted(pack, nodes, gd):
    spec = load(nodes, FOLDER)
    img = images(3, seed=5)
    seen = []
    batch = gd.detect(spec, img, "lion", 0.3, 0.25, resolution=RES, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    singles = [gd.detect(spec, img[i:i + 1], "lion", 0.3, 0.25, resolution=RES)[0] for i in range(3)]
    assert batch == singles and batch[0] != batch[1]
    rgba = torch.cat([img, torch.rand(3, 48, 64, 1)], dim=-1)
    found, preview, mask, _ = detect_node(nodes, spec, rgba, "lion", box_threshold=0.3)
    assert found == batch and preview.shape == (3, 48, 64, 3) and mask.shape == (3, 48, 64)
    for i in range(3):
        for e in found[i]:
            x0, y0, x1, y1 = e["box"]
            assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 48 and 0 < e["score"] <= 1
    assert found[0] == sorted(found[0], key=lambda e: -e["score"])


def test_position_best_and_max_select_after_thresholding(pack, nodes):
    spec = load(nodes, FOLDER)
    img = images(1, seed=3)
    everything = detect_node(nodes, spec, img, "lion", box_threshold=0.3)[0][0]
    assert len(everything) >= 3
    cx = [(e["box"][0] + e["box"][2]) / 2 for e in everything]
    left = detect_node(nodes, spec, img, "lion", box_threshold=0.3, position="left-most")
    assert left[0][0] == [everything[cx.index(min(cx))]]
    right = detect_node(nodes, spec, img, "lion", box_threshold=0.3, position="right-most")[0][0]
    assert right == [everything[cx.index(max(cx))]]
    best = detect_node(nodes, spec, img, "lion", box_threshold=0.3, best_only=True)[0][0]
    assert best == everything[:1]
    top3 = detect_node(nodes, spec, img, "lion", box_threshold=0.3, max_detections=3)[0][0]
    assert top3 == everything[:3]
    mask = left[2][0]
    x0, y0, x1, y1 = left[0][0][0]["box"]
    assert mask.sum() > 0 and mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].all()


def test_the_cached_model_is_shared_and_unchanged_by_runs(pack, nodes):
    cache = pack.models.core.cache.get_cache()
    spec = load(nodes, ORIGINAL)
    assert load(nodes, ORIGINAL) == spec and len(cache) == 1  # one file, one entry
    with cache.use(spec) as bundle:
        before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
        size_before = dict(bundle.image_processor.size)
    detect_node(nodes, spec, images(2), "lion . dog", resolution=96)
    with pytest.raises(ValueError):
        detect_node(nodes, spec, images(1), "")
    with cache.use(spec) as bundle:
        after = bundle.model.state_dict()
        assert not bundle.model.training and not any(p.requires_grad for p in bundle.model.parameters())
        assert dict(bundle.image_processor.size) == size_before
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    stats = cache.stats()["totals"]
    assert stats["entries"] == 1 and stats["misses"] == 1 and stats["hits"] >= 3


def test_nodes_are_described(pack, nodes):
    for name, cat in (("VisionKitGroundingDINOLoader", "VisionKit/loaders"),
                      ("VisionKitGroundingDINODetect", "VisionKit/perception")):
        cls = nodes[name]
        assert cls.CATEGORY == cat and cls.DESCRIPTION
        types = cls.INPUT_TYPES()
        for group in types.values():
            for inp, spec in group.items():
                assert spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["VisionKitGroundingDINODetect"] == "VisionKit Grounding DINO Detect"
    choices = nodes["VisionKitGroundingDINOLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert FOLDER in choices and ORIGINAL in choices and "vocab.txt" not in choices
    assert nodes["VisionKitGroundingDINODetect"].RETURN_TYPES[:3] == ("VK_BOXES", "IMAGE", "MASK")


def test_api_workflow_runs(pack, nodes, tmp_path):
    from vk_testing.runner import WorkflowRunner

    arr = (images(1, 64, 80, seed=9)[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "animals.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "animals.png"}},
        "2": {"class_type": "VisionKitGroundingDINOLoader", "inputs": {"model_name": ORIGINAL, "dtype": "auto"}},
        "3": {"class_type": "VisionKitGroundingDINODetect", "inputs": {
            "dino_model": ["2", 0], "image": ["1", 0], "prompt": "the left lion . dog", "box_threshold": 0.3,
            "text_threshold": 0.25, "max_detections": 2, "position": "all", "best_only": False, "resolution": 64}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
        "5": {"class_type": "VisionKitModelCacheInfo", "inputs": {"purge": False, "after": ["3", 3]}},
    }
    res = WorkflowRunner(nodes, tmp_path).run(prompt)
    found = res.outputs["3"][0]
    assert len(found) == 1 and 1 <= len(found[0]) <= 2
    assert res.previews["4"][0].shape == (1, 64, 80, 3)
    assert "grounding_dino" in res.outputs["5"][0]
    bad = json.loads(json.dumps(prompt))
    bad["3"]["inputs"]["prompt"] = " . "
    with pytest.raises(Exception, match="names nothing to find"):
        WorkflowRunner(nodes, tmp_path).run(bad)


def test_original_checkpoint_loads_to_defined_values_every_time(pack, nodes):
    """Weights the original file lacks (Swin's unused final norm) must not hold uninitialised memory."""
    cache = pack.models.core.cache.get_cache()
    states = []
    for _ in range(3):
        spec = load(nodes, ORIGINAL)
        with cache.use(spec) as bundle:
            sd = {k: v.clone() for k, v in bundle.model.state_dict().items()}
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
        states.append(sd)
        cache.purge()
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])
