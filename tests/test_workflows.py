"""T1: the shipped workflows (workflows/*.json canvas format, workflows/api/*.json API format).

Every API workflow runs through the test-only runner (tests/vk_testing/runner.py) with the tiny fixture models
under the real file names (tests/vk_testing/workflows.py: ALIASES), so the shipped files are what runs; only the
text-to-image sizes are lowered. Outputs are checked for what each workflow is for: an upscale is 4× larger and
equals the Upscale node on the loaded image, Canny edges equal OpenCV's, the mask is SAM's answer to the box
Grounding DINO found, an edit changes pixels only inside its mask, a ControlNet changes the image. That a UI file
and its API twin are the same graph is checked in the real browser (tests/test_t3_browser.py); here a static
check catches hand edits and a stale generator output.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from vk_testing import ROOT, dev_script
from vk_testing import workflows as W
from vk_testing.runner import WorkflowRunner

ISSUE_WORKFLOWS = {"lcm_txt2img", "controlnet_pose", "controlnet_canny", "ipadapter_style_transfer",
                   "instantid_portrait", "groundedsam_mask", "text_guided_edit", "clothes_swap", "upscale",
                   "clip_zero_shot"}
ISSUE20_WORKFLOWS = {"caption_img2img", "segment_everything", "most_similar_image"}  # captions, SAM, DINOv2


def find(api: dict, class_type: str, title: str | None = None) -> str:
    ids = [nid for nid, n in api.items()
           if n["class_type"] == class_type and (title is None or n["_meta"]["title"] == title)]
    assert len(ids) == 1, f"expected one {class_type} {title or ''} node, found {ids}"
    return ids[0]


@pytest.fixture(scope="session")
def alias_root(models_dir, tmp_path_factory):
    return W.link_real_names(tmp_path_factory.mktemp("real_names"), models_dir)


@pytest.fixture()
def run(pack, models_dir, alias_root, monkeypatch):
    """run(name or api dict) → (api as run, RunResult), with the real model names resolving to tiny files."""
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", f"{models_dir}{os.pathsep}{alias_root}")
    runner = WorkflowRunner({**pack.NODE_CLASS_MAPPINGS, **W.CORE_STAND_INS}, W.INPUTS_DIR)

    def _run(wf):
        api = W.for_tests(W.load_api(wf)) if isinstance(wf, str) else wf
        return api, runner.run(api)

    return _run


def load_input(name: str) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(W.INPUTS_DIR / name).convert("RGB")).copy()).float().div(255)[None]


# ---------------------------------------------------------------- the files
def test_the_issue_workflows_are_shipped_in_both_formats():
    ui = set(W.names())
    api = {p.stem for p in W.API_DIR.glob("*.json")}
    assert ui == api, f"UI files without API twin: {ui - api}; API files without UI file: {api - ui}"
    assert ISSUE_WORKFLOWS <= ui, sorted(ISSUE_WORKFLOWS - ui)
    assert ISSUE20_WORKFLOWS <= ui, sorted(ISSUE20_WORKFLOWS - ui)
    for name in ui:
        ui_wf, api_wf = W.load_ui(name), W.load_api(name)
        assert "nodes" in ui_wf and "links" in ui_wf and ui_wf["version"] == 0.4, name
        assert all({"class_type", "inputs"} <= set(n) for n in api_wf.values()), name


def test_generated_files_are_up_to_date():
    """workflows/ and workflows/api/ are exactly what scripts/dev/build_workflows.py writes from the node classes
    (a node whose inputs changed makes this fail until the files are rebuilt), and the example images are
    what scripts/dev/make_example_inputs.py draws."""
    assert dev_script("build_workflows").main(["--check"]) == 0
    assert dev_script("make_example_inputs").main(["--check"]) == 0


@pytest.mark.parametrize("name", W.names())
def test_note_says_what_it_does_and_which_models(name):
    ui, api = W.load_ui(name), W.load_api(name)
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1, f"{name}: one Note node expected"
    text = notes[0]["widgets_values"][0]
    for _nid, _k, model in W.model_inputs(api):
        assert model.split("/", 1)[-1] in text, f"{name}: the note does not name {model}"
    for node in api.values():
        if node["class_type"] == "LoadImage":
            assert node["inputs"]["image"] in text, f"{name}: the note does not name the input image"
            assert (W.INPUTS_DIR / node["inputs"]["image"]).is_file(), node["inputs"]["image"]


@pytest.mark.parametrize("name", W.names())
def test_model_names_are_the_readme_files(pack, name):
    from visionkit_pack.models.core.catalog import CATALOG

    files = {m.file for m in CATALOG}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for nid, k, v in W.model_inputs(W.load_api(name)):
        bare = v.split("/", 1)[1] if k == "model_name" and v.startswith(("checkpoints/", "diffusers/")) else v
        assert bare in files, f"{name} node {nid}: {k}={v!r} is not a model of models/core/catalog.py"
        assert bare in readme, f"{name} node {nid}: {bare} is not in the README's model table"
        assert any(real == bare for _f, real in W.ALIASES), f"tests have no tiny stand-in for {bare}"


@pytest.mark.parametrize("name", W.names())
def test_ui_file_and_api_twin_describe_the_same_graph(pack, name):
    """A static cross-check (the browser test is the real one): every non-Note canvas node is in the API file
    with the same type and title, its links are the API's links, its widget values the API's values."""
    ui, api = W.load_ui(name), W.load_api(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {lk[0]: lk for lk in ui["links"]}
    real = {n["id"] for n in ui["nodes"] if n["type"] != "Note"}
    assert set(api) == {str(i) for i in real}, name
    for nid in real:
        n, a = nodes[nid], api[str(nid)]
        assert a["class_type"] == n["type"]
        assert a["_meta"]["title"] == n.get("title", pack.NODE_DISPLAY_NAME_MAPPINGS.get(n["type"], a["_meta"]["title"]))
        linked = {i["name"]: [str(links[i["link"]][1]), links[i["link"]][2]] for i in n["inputs"] if i["link"]}
        assert {k: v for k, v in a["inputs"].items() if isinstance(v, list)} == linked, (name, nid)
        values = [v for k, v in a["inputs"].items() if not isinstance(v, list)]
        shown = [v for v in n["widgets_values"] if v not in ("fixed", "randomize", "increment", "decrement")]
        if n["type"] == "LoadImage":
            shown = shown[:1]  # the upload button's value is canvas-only
        linked_widgets = {i["widget"]["name"] for i in n["inputs"] if i.get("widget") and i["link"]}
        if linked_widgets:  # a linked widget keeps its value on the canvas; the API file has the link instead
            names = widget_names(pack.NODE_CLASS_MAPPINGS[n["type"]])
            shown = [v for v, w in zip(shown, names) if w not in linked_widgets]
        assert shown == values, (name, nid, shown, values)
    for lid, a, sa, b, sb, typ in ui["links"]:
        assert nodes[a]["outputs"][sa]["type"] == typ and lid in nodes[a]["outputs"][sa]["links"]
        assert nodes[b]["inputs"][sb]["link"] == lid
    assert ui["last_link_id"] == max(links, default=0) and ui["last_node_id"] == max(nodes)


def widget_names(cls) -> list[str]:
    """The node class's widget inputs in canvas order (required, then optional; sockets left out)."""
    it = cls.INPUT_TYPES()
    out = []
    for part in ("required", "optional"):
        for name, spec in it.get(part, {}).items():
            typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(typ, (list, tuple)) or (typ in ("INT", "FLOAT", "STRING", "BOOLEAN")
                                                  and not opts.get("forceInput")):
                out.append(name)
    return out


# ---------------------------------------------------------------- running them
def test_upscale_is_four_times_larger_and_equals_the_node(run, pack):
    api, res = run("upscale")
    save, up = find(api, "SaveImage"), find(api, "VisionKitUpscale")
    src = load_input(api[find(api, "LoadImage")]["inputs"]["image"])
    (out,) = res.saved[save]
    assert out.shape == (1, src.shape[1] * 4, src.shape[2] * 4, 3)
    assert api[up]["inputs"]["tile_size"] < max(src.shape[1:3])  # the example really is tiled
    model = res.outputs[find(api, "VisionKitUpscaleModelLoader")][0]
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"]().upscale(model, src, 0.0, 0, 16)[0]  # untiled
    assert torch.allclose(out, direct, atol=2e-3), float((out - direct).abs().max())


def test_lcm_txt2img_upscales_the_generated_image(run, pack):
    api, res = run("lcm_txt2img")
    sampler = api[find(api, "VisionKitLCMSampler")]["inputs"]
    (img,) = res.previews[find(api, "PreviewImage")]
    (big,) = res.saved[find(api, "SaveImage")]
    assert img.shape == (1, sampler["height"], sampler["width"], 3)
    assert big.shape == (1, sampler["height"] * 4, sampler["width"] * 4, 3)
    assert float(img.std()) > 0.01  # an image, not a constant
    model = res.outputs[find(api, "VisionKitUpscaleModelLoader")][0]
    assert torch.allclose(big, pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"]().upscale(model, img, 0.0, 0, 16)[0],
                          atol=2e-3)
    # the LCM-LoRA is on the pipeline the sampler used
    assert [lo.name for lo in res.outputs[find(api, "VisionKitLoraLoader")][0].loras] == ["lcm-lora-sdv1-5.safetensors"]


@pytest.mark.parametrize("name", ["controlnet_canny", "controlnet_pose"])
def test_controlnet_workflows_are_steered_by_their_hint(run, name):
    api, res = run(name)
    sampler_id, save = find(api, "VisionKitLCMSampler"), find(api, "SaveImage")
    s = api[sampler_id]["inputs"]
    (img,) = res.saved[save]
    assert img.shape == (1, s["height"], s["width"], 3)
    apply_id = find(api, "VisionKitControlNetApply")
    off = json.loads(json.dumps(api))
    off[apply_id]["inputs"]["strength"] = 0.0
    (img_off,) = run(off)[1].saved[save]
    assert float((img - img_off).abs().mean()) > 1e-3, "the ControlNet had no effect on the image"
    if name == "controlnet_canny":
        import cv2

        (edges,) = res.previews[find(api, "PreviewImage")]
        path = W.INPUTS_DIR / api[find(api, "LoadImage")]["inputs"]["image"]
        want = cv2.Canny(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY), 100, 200)
        assert torch.equal((edges[0, ..., 0] * 255).round().to(torch.uint8), torch.from_numpy(want))
        assert 0.01 < float(edges.mean()) < 0.5


def test_groundedsam_mask_is_sams_answer_to_the_found_boxes(run, pack):
    api, res = run("groundedsam_mask")
    det = res.outputs[find(api, "VisionKitGroundingDINODetect")]
    boxes = det[0]
    assert len(boxes) == 1 and boxes[0], "the tiny Grounding DINO found nothing: the mask check needs a box"
    (mask_img,) = res.saved[find(api, "SaveImage")]
    seg_inputs = api[find(api, "VisionKitSAMSegment")]["inputs"]
    src = load_input("visionkit_lions.png")
    sam = res.outputs[find(api, "VisionKitSAMLoader")][0]
    # the same SAM with the boxes as a JSON prompt (another input path of the node)
    points = json.dumps({"boxes": [b["box"] for b in boxes[0]]})
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitSAMSegment"]().run(
        sam, src, seg_inputs["multimask"], seg_inputs["mask_threshold"], seg_inputs["dilation"],
        seg_inputs["feather"], seg_inputs["output"], points=points)[0]
    assert mask_img.shape == (1, *src.shape[1:3], 3)
    assert torch.equal(mask_img[..., 0], direct)
    x0, y0, x1, y1 = (round(v) for v in boxes[0][0]["box"])
    assert float(direct[0, y0:y1, x0:x1].mean()) > 0, "the mask is empty inside the box that prompted it"
    previews = [res.previews[k][0] for k in res.previews]
    assert all(p.shape == src.shape for p in previews) and len(previews) == 2


def test_text_guided_edit_changes_only_the_left_lion_mask(run, pack):
    api = W.for_tests(W.load_api("text_guided_edit"))
    seg_id = find(api, "VisionKitSAMSegment")
    # The tiny random SAM answers with a fine checkerboard mask; the shipped 12 px growth would cover the whole
    # image and leave nothing outside the mask to check, so the mask is used as SAM gives it.
    api[seg_id]["inputs"].update(dilation=0, feather=0)
    api, res = run(api)
    det_id = find(api, "VisionKitGroundingDINODetect")
    src = load_input("visionkit_lions.png")
    # the box is the left-most of everything Grounding DINO finds for the prompt
    dino = res.outputs[find(api, "VisionKitGroundingDINOLoader")][0]
    d = dict(api[det_id]["inputs"])
    all_boxes = pack.NODE_CLASS_MAPPINGS["VisionKitGroundingDINODetect"]().detect(
        dino, src, d["prompt"], d["box_threshold"], d["text_threshold"], d["max_detections"], "all",
        d["best_only"], d["resolution"])[0][0]
    chosen = res.outputs[det_id][0][0]
    assert len(chosen) == 1 and all_boxes
    centre = lambda b: (b["box"][0] + b["box"][2]) / 2
    assert centre(chosen[0]) == min(centre(b) for b in all_boxes)

    mask = res.outputs[seg_id][0]
    (out,) = res.saved[find(api, "SaveImage")]
    generated = res.outputs[find(api, "VisionKitLCMSampler")][0]
    assert out.shape == src.shape == generated.shape
    outside, inside = mask[0] == 0, mask[0] >= 0.5
    assert int(outside.sum()) > 0 and int(inside.sum()) > 0, "the example needs a mask that is neither empty nor full"
    assert torch.equal(out[0][outside], src[0][outside]), "pixels outside the mask changed"
    assert float((out[0][inside] - src[0][inside]).abs().mean()) > 0.02, "the masked region was not repainted"
    assert torch.allclose(out[0][inside & (mask[0] == 1)], generated[0][inside & (mask[0] == 1)])


def test_clip_zero_shot_ranks_every_label(run, pack):
    api, res = run("clip_zero_shot")
    zs = find(api, "VisionKitCLIPZeroShot")
    inputs = api[zs]["inputs"]
    labels = [x for x in inputs["labels"].splitlines() if x.strip()]
    table = res.ui[zs]["text"][0]
    assert all(label in table for label in labels), table
    per_image = json.loads(res.outputs[zs][2])
    assert len(per_image) == 1 and sorted(x["label"] for x in per_image[0]["labels"]) == sorted(labels)
    assert abs(sum(x["probability"] for x in per_image[0]["labels"]) - 1) < 1e-5
    model = res.outputs[find(api, "VisionKitCLIPLoader")][0]
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitCLIPZeroShot"]().classify(
        model, load_input("visionkit_lions.png"), inputs["labels"], inputs["template"], inputs["show_top"])
    assert direct["ui"]["text"][0] == table


def test_ipadapter_style_transfer_is_steered_by_the_reference(run):
    api, res = run("ipadapter_style_transfer")
    s = api[find(api, "VisionKitLCMSampler")]["inputs"]
    save = find(api, "SaveImage")
    (img,) = res.saved[save]
    assert img.shape == (1, s["height"], s["width"], 3)
    apply_id = find(api, "VisionKitIPAdapterApply")
    assert api[apply_id]["inputs"]["mode"] == "style only"
    off = json.loads(json.dumps(api))
    off[apply_id]["inputs"]["weight"] = 0.0
    (img_off,) = run(off)[1].saved[save]
    assert float((img - img_off).abs().mean()) > 1e-3, "the style reference had no effect on the image"


def test_instantid_portrait_reads_out_the_face_similarity(run, pack):
    api, res = run("instantid_portrait")
    s = api[find(api, "VisionKitLCMSampler")]["inputs"]
    (img,) = res.saved[find(api, "SaveImage")]
    assert img.shape == (1, s["height"], s["width"], 3)
    (kps,) = res.previews[find(api, "PreviewImage")]
    face = load_input(api[find(api, "LoadImage")]["inputs"]["image"])
    assert kps.shape == face.shape and float(kps.max()) > 0  # the keypoints of the photo's face are drawn
    sim_id = find(api, "VisionKitFaceSimilarity")
    similarity, _text, _pairs = res.outputs[sim_id]
    assert res.ui[sim_id] and -1.0 <= similarity <= 1.0
    # the readout compares the face photo with the generated image (not with itself, which would give 1)
    fs = pack.NODE_CLASS_MAPPINGS["VisionKitFaceSimilarity"]()
    model = res.outputs[find(api, "VisionKitFaceAnalysisLoader")][0]
    kw = {k: v for k, v in api[sim_id]["inputs"].items() if not isinstance(v, list)}
    direct = fs.compare(face_model=model, image_a=face, image_b=img, **kw)
    assert (direct["result"] if isinstance(direct, dict) else direct)[0] == similarity
    itself = fs.compare(face_model=model, image_a=face, image_b=face, **kw)
    assert abs((itself["result"] if isinstance(itself, dict) else itself)[0] - 1.0) < 1e-4


def test_clothes_swap_repaints_only_the_shirt_mask_with_the_reference(run):
    api = W.for_tests(W.load_api("clothes_swap"))
    gsam_id = find(api, "VisionKitGroundedSAM")
    api[gsam_id]["inputs"].update(dilation=0, feather=0)  # see test_text_guided_edit_...: the tiny SAM's checkerboard
    api, res = run(api)
    src = load_input(api[find(api, "LoadImage", "Person")]["inputs"]["image"])
    mask = res.outputs[gsam_id][0]
    save = find(api, "SaveImage")
    (out,) = res.saved[save]
    assert out.shape == src.shape
    outside, inside = mask[0] == 0, mask[0] >= 0.5
    assert int(outside.sum()) > 0 and int(inside.sum()) > 0
    assert torch.equal(out[0][outside], src[0][outside]), "pixels outside the shirt mask changed"
    assert float((out[0][inside] - src[0][inside]).abs().mean()) > 0.02
    apply_id = find(api, "VisionKitIPAdapterApply")
    assert api[apply_id]["inputs"]["attn_mask"] == [gsam_id, 0]  # the reference acts on the shirt only
    off = json.loads(json.dumps(api))
    off[apply_id]["inputs"]["weight"] = 0.0
    (out_off,) = run(off)[1].saved[save]
    assert float((out - out_off).abs()[0][inside].mean()) > 1e-3, "the garment reference had no effect"
    assert torch.equal(out_off[0][outside], src[0][outside])


# ---------------------------------------------------------------- issue 20: captions, segment everything, similarity
def test_caption_img2img_prompts_with_blips_caption(run, pack):
    api, res = run("caption_img2img")
    cap_id, enc_id = find(api, "VisionKitCaption"), find(api, "VisionKitPromptEncode")
    assert api[enc_id]["inputs"]["positive"] == [cap_id, 0]  # the caption STRING is the positive prompt
    photo = load_input("visionkit_house.png")
    caption, per_image, _js = res.outputs[cap_id]
    assert res.ui[cap_id]["text"] == [caption] and per_image == [caption] and caption.strip()
    # the caption is transformers' own generate() on the loaded photo, with the node's settings
    from transformers import BlipForConditionalGeneration, BlipProcessor

    folder = res.outputs[find(api, "VisionKitCaptionLoader")][0].path
    model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    proc = BlipProcessor.from_pretrained(folder, local_files_only=True)
    from PIL import Image

    pil = Image.open(W.INPUTS_DIR / "visionkit_house.png").convert("RGB")
    c = api[cap_id]["inputs"]
    with torch.no_grad():
        ids = model.generate(**proc(images=pil, return_tensors="pt"), max_new_tokens=c["max_tokens"],
                             num_beams=c["num_beams"], do_sample=False)
    assert caption == proc.decode(ids[0], skip_special_tokens=True).strip()
    # the conditioning is Prompt Encode's of that text; the image-to-image result is a changed photo of its size
    pipe = res.outputs[find(api, "VisionKitLoraLoader")][0]
    e = {k: v for k, v in api[enc_id]["inputs"].items() if not isinstance(v, list)}
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(pipe, caption, **e)[0]
    got = res.outputs[enc_id][0]
    assert torch.equal(got.prompt_embeds, direct.prompt_embeds)
    (out,) = res.saved[find(api, "SaveImage")]
    assert out.shape == photo.shape and 0.01 < float((out - photo).abs().mean()) < 0.5


def test_segment_everything_masks_are_the_generators_sorted_by_area(run, pack):
    from segment_anything import SamAutomaticMaskGenerator

    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.perception.sam_everything import Settings

    api = W.for_tests(W.load_api("segment_everything"))
    seg_id = find(api, "VisionKitSAMSegmentEverything")
    shipped = W.load_api("segment_everything")[seg_id]["inputs"]
    assert shipped["points_per_side"] == 32 and api[seg_id]["inputs"]["points_per_side"] == 2
    # the tiny random SAM's IoU / stability predictions are far below SAM's real thresholds: keep every mask
    api[seg_id]["inputs"].update(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    api, res = run(api)
    masks, preview, js, count = res.outputs[seg_id]
    src = load_input("visionkit_lions.png")
    inputs = api[seg_id]["inputs"]
    settings = Settings(**{k: inputs[k] for k in ("points_per_side", "pred_iou_thresh", "stability_score_thresh",
                                                   "min_mask_region_area", "box_nms_thresh", "crop_n_layers",
                                                   "points_per_batch")})
    sam_spec = res.outputs[find(api, "VisionKitSAMLoader")][0]
    with get_cache().use(sam_spec) as sam:
        rgb = (src[0] * 255).round().to(torch.uint8).numpy()
        want = sorted(SamAutomaticMaskGenerator(sam, **settings.generator_kwargs()).generate(rgb),
                      key=lambda r: -r["area"])
    assert count == len(want) >= 2 and masks.shape == (count, *src.shape[1:3])
    assert all(torch.equal(m.bool(), torch.from_numpy(r["segmentation"])) for m, r in zip(masks, want))
    assert [r["area"] for r in json.loads(js)[0]] == [r["area"] for r in want]
    overlay = res.previews[find(api, "PreviewImage", "Masks in colours")][0]
    every = res.previews[find(api, "PreviewImage", "Every mask, largest first")][0]
    assert overlay.shape == src.shape and float((overlay - src).abs().max()) > 0.05
    assert every.shape == (count, *src.shape[1:3], 3) and torch.equal(every[..., 0], masks)


def test_most_similar_image_ranks_the_candidates_by_dinov2(run, pack):
    api, res = run("most_similar_image")
    rank_id, sim_id = find(api, "VisionKitRankSimilarImages"), find(api, "VisionKitImageSimilarity")
    cands = torch.cat([load_input("visionkit_house.png"), load_input("visionkit_lion_alone.png")])
    sorted_images, best, best_sim, scores = res.outputs[rank_id]
    # the library's embedding (image processor + Dinov2Model pooler_output) and cosine on the loaded files
    from PIL import Image
    from transformers import AutoImageProcessor, Dinov2Model

    folder = res.outputs[find(api, "VisionKitImageSimilarityLoader")][0].path
    model = Dinov2Model.from_pretrained(folder, local_files_only=True).eval()
    proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)

    def emb(name):
        with torch.no_grad():
            return model(**proc(images=Image.open(W.INPUTS_DIR / name).convert("RGB"), return_tensors="pt")
                         ).pooler_output[0]

    r = emb("visionkit_lions.png")
    sims = [float(torch.nn.functional.cosine_similarity(r, emb(n), dim=0))
            for n in ("visionkit_house.png", "visionkit_lion_alone.png")]
    order = sorted(range(2), key=lambda i: -sims[i])
    assert [x["index"] for x in json.loads(scores)] == order and best == order[0]
    assert abs(best_sim - sims[best]) < 1e-5 and torch.equal(sorted_images, cands[order])
    assert res.ui[rank_id]["text"][0].startswith("images ranked")
    assert torch.equal(res.previews[find(api, "PreviewImage")][0], cands[order])
    # the readout: the reference against the sorted batch, best pair (max) = the best match's similarity
    value, text, _pairs = res.outputs[sim_id]
    assert abs(value - max(sims)) < 1e-5 and res.ui[sim_id]["text"] == [text]


def test_every_api_workflow_runs(run):
    """Nothing shipped is left out of the content tests above by accident: each one runs here too."""
    covered = ISSUE_WORKFLOWS | ISSUE20_WORKFLOWS
    for name in sorted(set(W.names()) - covered):
        _api, res = run(name)
        assert res.saved or res.previews or res.ui, name


# ---------------------------------------------------------------- issue 20: pose and depth workflows
ISSUE20_WORKFLOWS = {"pose_from_photo", "depth_restyle"}


def test_issue20_workflows_are_shipped():
    assert ISSUE20_WORKFLOWS <= set(W.names())


def test_pose_from_photo_draws_a_pose_per_found_person_and_steers_the_image(run, pack):
    api, res = run("pose_from_photo")
    det_id, pose_id = find(api, "VisionKitGroundingDINODetect"), find(api, "VisionKitPoseEstimate")
    boxes = res.outputs[det_id][0]
    assert boxes[0], "the tiny Grounding DINO found no person: the pose check needs a box"
    pose_img, preview, text = res.outputs[pose_id]
    frames = json.loads(text)
    src = load_input(api[find(api, "LoadImage")]["inputs"]["image"])
    assert pose_img.shape == preview.shape == src.shape
    assert len(frames) == 1 and len(frames[0]["people"]) == len(boxes[0])  # one pose per person box
    assert [p["box"] for p in frames[0]["people"]] == [b["box"] for b in boxes[0]]
    assert float(pose_img.max()) > 0, "no point of any person was drawn"
    # the same node on the same photo and boxes gives the same skeleton (the workflow wires what it says)
    model = res.outputs[find(api, "VisionKitPoseLoader")][0]
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitPoseEstimate"]().estimate(
        model, src, api[pose_id]["inputs"]["threshold"], boxes=boxes)
    assert torch.equal(direct[0], pose_img) and direct[2] == text
    (shown,) = res.previews[find(api, "PreviewImage")]
    assert torch.equal(shown, preview)
    # the skeleton is the ControlNet hint, and it steers the generated image
    apply_id, save = find(api, "VisionKitControlNetApply"), find(api, "SaveImage")
    assert api[apply_id]["inputs"]["image"] == [pose_id, 0]
    s = api[find(api, "VisionKitLCMSampler")]["inputs"]
    (img,) = res.saved[save]
    assert img.shape == (1, s["height"], s["width"], 3)
    off = json.loads(json.dumps(api))
    off[apply_id]["inputs"]["strength"] = 0.0
    (img_off,) = run(off)[1].saved[save]
    assert float((img - img_off).abs().mean()) > 1e-3, "the pose ControlNet had no effect on the image"


def test_depth_restyle_is_steered_by_the_depth_map_and_the_style(run, pack):
    api, res = run("depth_restyle")
    depth_id = find(api, "VisionKitDepthEstimate")
    depth_img, raw = res.outputs[depth_id]
    src = load_input(api[find(api, "LoadImage", "Picture (layout)")]["inputs"]["image"])
    assert depth_img.shape == src.shape and raw.shape == src.shape[:3]
    assert float(depth_img.min()) == 0.0 and float(depth_img.max()) == 1.0  # normalised per image
    model = res.outputs[find(api, "VisionKitDepthLoader")][0]
    direct = pack.NODE_CLASS_MAPPINGS["VisionKitDepthEstimate"]().estimate(model, src, 0)
    assert torch.equal(direct[0], depth_img) and torch.equal(direct[1], raw)
    (shown,) = res.previews[find(api, "PreviewImage")]
    assert torch.equal(shown, depth_img)
    apply_id, ipa_id = find(api, "VisionKitControlNetApply"), find(api, "VisionKitIPAdapterApply")
    assert api[apply_id]["inputs"]["image"] == [depth_id, 0]
    assert api[ipa_id]["inputs"]["control"] == [apply_id, 0] and api[ipa_id]["inputs"]["mode"] == "style only"
    save = find(api, "SaveImage")
    s = api[find(api, "VisionKitLCMSampler")]["inputs"]
    (img,) = res.saved[save]
    assert img.shape == (1, s["height"], s["width"], 3)
    for node_id, key in ((apply_id, "strength"), (ipa_id, "weight")):  # each of the two steers the image
        off = json.loads(json.dumps(api))
        off[node_id]["inputs"][key] = 0.0
        (img_off,) = run(off)[1].saved[save]
        assert float((img - img_off).abs().mean()) > 1e-3, f"{api[node_id]['class_type']} had no effect"
