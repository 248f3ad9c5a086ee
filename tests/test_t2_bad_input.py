"""T2 of the bad-input corpus (issue 10): the same bad inputs over a real ComfyUI's /prompt.

Each case is an API prompt built the way a client would send it (LoadImage of an uploaded file, model names,
widget values). A bad value is answered either up front (HTTP 400 with `node_errors` naming the node and our
message) or by a failed /history entry carrying the node's clear message; a defined outcome (1×1 image, a
16384×16 strip, no face) finishes with status success. After every case the server answers the next, good,
prompt. Bad model files are written into the server's own models folder under fresh names and removed after.
The T1 side (every node, message wording, cache state) is tests/test_bad_input.py.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.t2

TINY_X4 = "tiny_RealESRGAN_x4plus.pth"


def _png(comfy, name: str, array: np.ndarray, mode: str | None = None) -> str:  # noqa: F811
    d = Path(comfy.base_dir) / "input"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(d / name)
    return name


def _file(comfy, folder: str, data: bytes | None = None, source: str | None = None,  # noqa: F811
          ext: str = ".pth") -> str:
    """A file under a fresh name in the server's own models/<folder> (removed by the fixture)."""
    name = f"t2bad_{uuid.uuid4().hex[:8]}{ext}"
    d = Path(comfy.base_dir) / "models" / folder
    d.mkdir(parents=True, exist_ok=True)
    if source:
        shutil.copyfile(Path(comfy.models_dir) / source, d / name)
    else:
        (d / name).write_bytes(data or b"")
    _CREATED.append(d / name)
    return name


_CREATED: list[Path] = []


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _pickled(comfy, folder: str, marker: Path) -> str:  # noqa: F811
    import io

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "evil": _Payload(str(marker))}, buf)
    return _file(comfy, folder, buf.getvalue())


def load(node_id: str, image: str) -> dict:
    return {node_id: {"class_type": "LoadImage", "inputs": {"image": image}}}


def upscale(image: str, model: str = TINY_X4, tile: int = 512) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": model, "dtype": "auto"}},
            "3": {"class_type": "VisionKitUpscale", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0],
                                                               "outscale": 0.0, "tile_size": tile, "tile_pad": 8}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def sam(image: str, points: str, model: str = "tiny_sam_vit.pth") -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": model, "dtype": "fp32"}},
            "3": {"class_type": "VisionKitSAMSegment", "inputs": {
                "sam_model": ["2", 0], "image": ["1", 0], "multimask": "best score", "mask_threshold": 0.0,
                "dilation": 0, "feather": 0, "output": "union", "points": points}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def detect(image: str, prompt: str = "cat .", model: str = "tiny-grounding-dino") -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitGroundingDINOLoader", "inputs": {"model_name": model, "dtype": "auto"}},
            "3": {"class_type": "VisionKitGroundingDINODetect", "inputs": {
                "dino_model": ["2", 0], "image": ["1", 0], "prompt": prompt, "box_threshold": 0.3,
                "text_threshold": 0.25, "max_detections": 0, "position": "all", "best_only": False}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def generate(**over) -> dict:
    s = {"seed": 1, "steps": 2, "guidance": 1.0, "scheduler": "lcm", "width": 64, "height": 64, "batch_size": 1,
         "denoise": 1.0}
    pipe = over.pop("pipe", "tiny-sd15.safetensors")
    lora = over.pop("lora", None)
    s.update(over)
    p = {"1": {"class_type": "VisionKitPipelineLoader", "inputs": {"model_name": pipe, "dtype": "auto",
                                                                     "vae_name": "(from checkpoint)"}}}
    src = ["1", 0]
    if lora:
        p["5"] = {"class_type": "VisionKitLoraLoader", "inputs": {"pipeline": src, "lora_name": lora,
                                                                   "strength_model": 1.0, "strength_clip": 1.0}}
        src = ["5", 0]
    p["2"] = {"class_type": "VisionKitPromptEncode", "inputs": {"pipeline": src, "positive": "a cube", "negative": "",
                                                                 "stop_at_clip_layer": 0}}
    p["3"] = {"class_type": "VisionKitLCMSampler", "inputs": {"pipeline": src, "conditioning": ["2", 0], **s}}
    p["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    return p


def faces(image: str, if_no_face: str = "error") -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitFaceAnalysisLoader", "inputs": {"pack_name": "tiny_buffalo",
                                                                          "provider": "auto", "det_size": 128,
                                                                          "det_thresh": 0.5}},
            "3": {"class_type": "VisionKitFaceDetect", "inputs": {"face_model": ["2", 0], "image": ["1", 0],
                                                                  "selection": "largest", "index": 0,
                                                                  "if_no_face": if_no_face}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


@dataclass
class T2Case:
    id: str
    prompt: Callable  # (comfy, tmp) -> API prompt
    says: str = ""  # expected in node_errors (HTTP 400) or in the failed history entry's messages
    ok: Callable | None = None  # success; check(comfy, history entry)


def _outputs_shape(node: str, w: int, h: int):
    def check(comfy, entry):  # noqa: F811
        import io
        import urllib.parse
        import urllib.request

        img = entry["outputs"][node]["images"][0]
        with urllib.request.urlopen(comfy.url + "/view?" + urllib.parse.urlencode(img), timeout=30) as r:
            got = Image.open(io.BytesIO(r.read())).size
        assert got == (w, h), (got, (w, h))
    return check


RGB = lambda h, w: (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)  # noqa: E731

CASES = [
    T2Case("model name with ..", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), "../sams/tiny_sam_vit.pth"),
           says="tries to leave its model folder"),
    T2Case("absolute model path", lambda c, t: sam(_png(c, "a.png", RGB(8, 8)), "", "/etc/passwd"),
           says="is an absolute path"),
    T2Case("model not in the folder", lambda c, t: detect(_png(c, "a.png", RGB(8, 8)), model="groundingdino_swinb.pth"),
           says="was not found in the grounding-dino folder"),
    T2Case("points that are not JSON", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"points": [[1, 2'),
           says="not valid JSON"),
    T2Case("width not a multiple of 8", lambda c, t: generate(width=100), says="width 100 is not a multiple of 8"),
    T2Case("steps 0", lambda c, t: generate(steps=0), says="steps"),
    T2Case("denoise out of range", lambda c, t: generate(denoise=1.5), says="denoise"),
    T2Case("points outside the image", lambda c, t: sam(_png(c, "a.png", RGB(32, 32)), '{"points": [[50, 5, 1]]}'),
           says="is outside the 32×32 image"),
    T2Case("empty detection prompt", lambda c, t: detect(_png(c, "a.png", RGB(32, 32)), prompt=" . "),
           says="names nothing to find"),
    T2Case("SAM file in the upscale loader", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)),
                                                                   _file(c, "upscale_models", source="sams/tiny_sam_vit.pth")),
           says="it looks like a SAM (segment-anything) checkpoint"),
    T2Case("truncated safetensors", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), _file(
        c, "upscale_models", (Path(c.models_dir) / "upscale_models/tiny_realesr-general-x4v3.safetensors").read_bytes()[
            :2000], ext=".safetensors")), says="probably truncated"),
    T2Case("zero-byte file", lambda c, t: sam(_png(c, "a.png", RGB(8, 8)), "", _file(c, "sams", b"")),
           says="empty (zero-byte) file"),
    T2Case("pickled object in a .pth", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)),
                                                             _pickled(c, "upscale_models", t / "pwned")),
           says="pickled Python objects"),
    T2Case("SD1.5 LoRA on an SDXL pipeline", lambda c, t: generate(pipe="tiny-sdxl.safetensors",
                                                                   lora="real-size-sd15-lora.safetensors"),
           says="LoRA is SD1.5, the pipeline is SDXL"),
    T2Case("no face, error mode", lambda c, t: faces(_png(c, "black.png", np.zeros((64, 64, 3), np.uint8))),
           says="no face"),
    T2Case("no face, empty result", lambda c, t: faces(_png(c, "black.png", np.zeros((64, 64, 3), np.uint8)),
                                                       "empty result"), ok=_outputs_shape("4", 64, 64)),
    T2Case("1x1 image", lambda c, t: upscale(_png(c, "one.png", RGB(1, 1))), ok=_outputs_shape("4", 4, 4)),
    T2Case("16384x16 strip", lambda c, t: upscale(_png(c, "strip.png", RGB(16, 16384)), tile=512),
           ok=_outputs_shape("4", 65536, 64)),
    T2Case("RGBA image", lambda c, t: sam(_png(c, "rgba.png", np.dstack([RGB(24, 24), np.full((24, 24), 128, np.uint8)])),
                                          '{"points": [[5, 5, 1]]}'), ok=_outputs_shape("4", 24, 24)),
    T2Case("grayscale image", lambda c, t: detect(_png(c, "gray.png", RGB(24, 24)[..., 0], "L")),
           ok=_outputs_shape("4", 24, 24)),
]


def test_t2_corpus_covers_both_kinds_of_answer():
    assert len(CASES) >= 20
    assert any(c.says for c in CASES) and any(c.ok for c in CASES)


@pytest.fixture()
def cleanup():
    yield
    while _CREATED:
        p = _CREATED.pop()
        if p.exists():
            p.unlink()


def good_prompt(comfy) -> dict:  # noqa: F811
    return upscale(_png(comfy, "good.png", RGB(8, 8)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_over_prompt(comfy, case: T2Case, tmp_path, cleanup):  # noqa: F811
    prompt = case.prompt(comfy, tmp_path)
    status, body = comfy.submit(prompt)
    if status == 400:  # refused up front by VALIDATE_INPUTS / ComfyUI's own checks
        text = json.dumps(body.get("node_errors", {}), ensure_ascii=False) + json.dumps(body.get("error", {}))
        assert case.says and body.get("node_errors"), text[:3000]
        assert case.says in text, text[:3000]
    else:
        assert status == 200, (status, body)
        entry = comfy.wait_history(body["prompt_id"], timeout=180)
        result = entry["status"]["status_str"]
        text = json.dumps(entry["status"].get("messages"), ensure_ascii=False, default=str)
        if case.says:
            assert result == "error", text[:3000]
            assert case.says in text, text[:3000]
        else:
            assert result == "success", text[:3000]
            case.ok(comfy, entry)
    assert not (tmp_path / "pwned").exists(), "the pickled payload ran inside the server"
    # the server lives on and answers the next prompt
    assert comfy.run_prompt(good_prompt(comfy))["status"]["status_str"] == "success"
    assert not [e for e in comfy.get_json("/visionkit/cache")["entries"] if e.get("in_use")]
