"""T2: every shipped API workflow queued on a real ComfyUI (the shared `comfy` server) with the tiny models.

The server's own models folder gets links with the real model names (tests/vk_testing/workflows.py), and its
input folder the example images, so the shipped files are queued as they are (text-to-image sizes lowered).
Each prompt must finish with status success in /history and its images must be fetchable from /view; a broken
prompt is rejected with node_errors and the server answers the next one; /api/workflow_templates serves the
canvas files.
"""
from __future__ import annotations

import io
import json
import urllib.parse

import pytest
from vk_testing import workflows as W
from vk_testing.comfy_server import PACK_FOLDER, comfy  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.t2


@pytest.fixture(scope="module")
def server(comfy):  # noqa: F811
    W.link_real_names(comfy.base_dir / "models", comfy.models_dir)
    W.copy_inputs(comfy.base_dir / "input")
    return comfy


def fetch(srv, path: str) -> bytes:
    with srv._opener.open(srv.url + path, timeout=30) as r:
        assert r.status == 200, (path, r.status)
        return r.read()


def view(srv, image: dict):
    from PIL import Image

    q = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                "type": image.get("type", "output")})
    return Image.open(io.BytesIO(fetch(srv, f"/view?{q}")))


def find_one(api: dict, class_type: str) -> str:
    (nid,) = [k for k, n in api.items() if n["class_type"] == class_type]
    return nid


def test_templates_route_lists_the_shipped_workflows(server):
    listed = server.get_json("/api/workflow_templates")
    assert sorted(listed.get(PACK_FOLDER, [])) == W.names(), listed
    # Every version tested serves the pack's workflows/ folder (0.33 prefers example_workflows/ and still reads
    # workflows/) and the frontends ask for /api/workflow_templates/<pack>/<name>.json and, as the Templates
    # dialog's thumbnail, <name>.jpg (1.27 and 1.58 alike): each must be there, or the console shows a 404
    # per template.
    for name in W.names():
        served = json.loads(fetch(server, f"/api/workflow_templates/{PACK_FOLDER}/{name}.json"))
        assert served == W.load_ui(name), (server.version, name)
        thumb = fetch(server, f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert thumb[:2] == b"\xff\xd8", (server.version, name)


@pytest.mark.parametrize("name", W.names())
def test_api_workflow_succeeds_and_its_images_can_be_fetched(server, name):
    api = W.for_tests(W.load_api(name))
    entry = server.run_prompt(api, timeout=300)
    assert entry["status"]["status_str"] == "success"
    outputs = entry["outputs"]
    image_nodes = [nid for nid, n in api.items() if n["class_type"] in ("SaveImage", "PreviewImage")]
    for nid in image_nodes:
        assert outputs.get(nid, {}).get("images"), f"{name}: node {nid} ({api[nid]['class_type']}) has no images"
        for image in outputs[nid]["images"]:
            im = view(server, image)
            assert im.width > 0 and im.height > 0
    readouts = [nid for nid, n in api.items() if n["class_type"] == "VisionKitCLIPZeroShot"]
    for nid in readouts:
        assert outputs[nid]["text"][0].strip(), outputs[nid]
    if name == "upscale":
        (image,) = outputs[find_one(api, "SaveImage")]["images"]
        src = view(server, {"filename": api[find_one(api, "LoadImage")]["inputs"]["image"], "type": "input"})
        assert view(server, image).size == (src.width * 4, src.height * 4)


def test_text_guided_edit_with_comfyuis_own_composite_changes_only_the_mask(server):
    """The T1 runner pastes with a stand-in; here ComfyUI's real ImageCompositeMasked does it. The mask is saved
    too (MaskToImage) to compare pixels. As in T1, the tiny SAM's checkerboard mask is used ungrown."""
    import numpy as np

    api = W.for_tests(W.load_api("text_guided_edit"))
    seg = find_one(api, "VisionKitSAMSegment")
    api[seg]["inputs"].update(dilation=0, feather=0)
    api["90"] = {"class_type": "MaskToImage", "inputs": {"mask": [seg, 0]}}
    api["91"] = {"class_type": "SaveImage", "inputs": {"images": ["90", 0], "filename_prefix": "t2_edit_mask"}}
    entry = server.run_prompt(api, timeout=300)
    save = next(k for k, n in api.items() if n["class_type"] == "SaveImage" and k != "91")
    out = np.asarray(view(server, entry["outputs"][save]["images"][0]).convert("RGB")).astype(int)
    mask = np.asarray(view(server, entry["outputs"]["91"]["images"][0]).convert("L")).astype(int)
    src = np.asarray(view(server, {"filename": api[find_one(api, "LoadImage")]["inputs"]["image"], "type": "input"})
                     .convert("RGB")).astype(int)
    outside, inside = mask == 0, mask == 255
    assert outside.any() and inside.any()
    assert np.abs(out[outside] - src[outside]).max() <= 1, "pixels outside the mask changed"  # 8-bit round trip
    assert np.abs(out[inside] - src[inside]).mean() > 5, "the masked region was not repainted"


@pytest.mark.parametrize("breakage, message", [
    ("model", "was not found"),
    ("link", "Required input is missing"),
])
def test_broken_prompt_returns_node_errors_and_the_server_lives_on(server, breakage, message):
    # (ComfyUI still runs the outputs a broken node does not feed, answering 200 with node_errors; in the
    # upscale workflow every output depends on the broken node, so the whole prompt is refused)
    api = W.load_api("upscale")
    if breakage == "model":
        nid = find_one(api, "VisionKitUpscaleModelLoader")
        api[nid]["inputs"]["model_name"] = "RealESRGAN_x5_missing.pth"
    else:
        nid = find_one(api, "VisionKitUpscale")
        del api[nid]["inputs"]["image"]
    status, body = server.submit(api)
    assert status == 400, (status, body)
    assert nid in body["node_errors"], body
    assert message in json.dumps(body["node_errors"][nid]), body["node_errors"][nid]
    entry = server.run_prompt(W.for_tests(W.load_api("upscale")), timeout=300)
    assert entry["status"]["status_str"] == "success"
