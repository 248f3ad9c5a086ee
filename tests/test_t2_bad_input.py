"""T2 of the bad-input corpus (issue 10): the same bad inputs over a real ComfyUI's /prompt.

Each case is an API prompt built the way a client would send it (LoadImage of an uploaded file, model names,
widget values). A bad value is answered either up front (HTTP 400 with `node_errors` naming the node and our
message) or by a failed /history entry carrying the node's clear message; a defined outcome (1×1 image, a
16384×16 strip, no face) finishes with status success. After every case the server answers the next, good,
prompt. Bad model files are written into the server's own models folder under fresh names and removed after.
The T1 side (every node, message wording, cache state) is tests/test_bad_input.py.

Issue 18: ComfyUI gives a VALIDATE_INPUTS message to every input that function names, so a node whose
VALIDATE_INPUTS named five inputs showed its message five times in node_errors. Every 400 here is measured:
each expected message occurs exactly once in node_errors, and no node carries one custom message twice.
Out-of-range widgets get ComfyUI's own min/max message ("Value 0 smaller than min of 1", details: the input);
joint checks (start_percent < end_percent, Canny's thresholds) and what no min/max sees (NaN, a multiple of
8 or 32) fail when the node runs, with the pack's message.
"""
from __future__ import annotations

import collections
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


def _legacy_pickled(comfy, folder: str, marker: Path) -> str:  # noqa: F811
    """A legacy-format (not zip) torch file whose pickle calls open(): the global must be named, nothing run."""
    import io

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "evil": _Payload(str(marker))}, buf, _use_new_zipfile_serialization=False)
    return _file(comfy, folder, buf.getvalue())


def _with_training_args(comfy) -> str:  # noqa: F811
    """The tiny Real-ESRGAN weights saved the way some releases are: beside argparse.Namespace training args."""
    import argparse
    import io

    from vk_testing import import_pack

    import_pack()
    from visionkit_pack.models.core.weights import load_state_dict

    sd = load_state_dict(str(Path(comfy.models_dir) / "upscale_models" / TINY_X4))
    buf = io.BytesIO()
    torch.save({"params_ema": sd, "opt": argparse.Namespace(lr=2e-4, name="train_x4")}, buf)
    return _file(comfy, "upscale_models", buf.getvalue())


def _dino_folder_with_pickled_bin(comfy, marker: Path) -> str:  # noqa: F811
    """A copy of the tiny transformers Grounding DINO folder whose weights are a pickled pytorch_model.bin."""
    import io

    from vk_testing import import_pack

    import_pack()
    from visionkit_pack.models.core.weights import load_state_dict

    src = Path(comfy.models_dir) / "grounding-dino" / "tiny-grounding-dino"
    name = f"t2bad_{uuid.uuid4().hex[:8]}"
    d = Path(comfy.base_dir) / "models" / "grounding-dino" / name
    shutil.copytree(src, d)
    _CREATED.append(d)
    sd = load_state_dict(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    buf = io.BytesIO()
    torch.save({**sd, "evil": _Payload(str(marker))}, buf)
    (d / "pytorch_model.bin").write_bytes(buf.getvalue())
    return name


def _looping_loras(comfy) -> str:  # noqa: F811
    """Two symlink loops in the server's loras folder (loras/a -> ., loras/b -> .): the listing must not hang."""
    d = Path(comfy.base_dir) / "models" / "loras"
    d.mkdir(parents=True, exist_ok=True)
    for n in ("t2loop_a", "t2loop_b"):
        if not (d / n).is_symlink():
            (d / n).symlink_to(d, target_is_directory=True)
            _CREATED.append(d / n)
    return "missing-lora.safetensors"


def load(node_id: str, image: str) -> dict:
    return {node_id: {"class_type": "LoadImage", "inputs": {"image": image}}}


def upscale(image: str, model: str = TINY_X4, tile=512, **over) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": model, "dtype": "auto"}},
            "3": {"class_type": "VisionKitUpscale", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0],
                                                               "outscale": 0.0, "tile_size": tile, "tile_pad": 8,
                                                               **over}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def sam(image: str, points: str, model: str = "tiny_sam_vit.pth") -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": model, "dtype": "fp32"}},
            "3": {"class_type": "VisionKitSAMSegment", "inputs": {
                "sam_model": ["2", 0], "image": ["1", 0], "multimask": "best score", "mask_threshold": 0.0,
                "dilation": 0, "feather": 0, "output": "union", "points": points}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def detect(image: str, prompt: str = "cat .", model: str = "tiny-grounding-dino", dtype: str = "auto",
           **over) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitGroundingDINOLoader", "inputs": {"model_name": model, "dtype": dtype}},
            "3": {"class_type": "VisionKitGroundingDINODetect", "inputs": {
                "dino_model": ["2", 0], "image": ["1", 0], "prompt": prompt, "box_threshold": 0.3,
                "text_threshold": 0.25, "max_detections": 0, "position": "all", "best_only": False, **over}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def generate(**over) -> dict:
    s = {"seed": 1, "steps": 2, "guidance": 1.0, "scheduler": "lcm", "width": 64, "height": 64, "batch_size": 1,
         "denoise": 1.0}
    pipe = over.pop("pipe", "tiny-sd15.safetensors")
    vae = over.pop("vae", "(from checkpoint)")
    lora = over.pop("lora", None)
    lora_strength = over.pop("lora_strength", 1.0)
    encode = over.pop("encode", {})
    control = over.pop("control", None)  # {node id: node}: a control chain whose last node feeds the sampler
    s.update(over)
    p = {"1": {"class_type": "VisionKitPipelineLoader", "inputs": {"model_name": pipe, "dtype": "auto",
                                                                     "vae_name": vae}}}
    src = ["1", 0]
    if lora:
        p["5"] = {"class_type": "VisionKitLoraLoader", "inputs": {"pipeline": src, "lora_name": lora,
                                                                   "strength_model": lora_strength,
                                                                   "strength_clip": 1.0}}
        src = ["5", 0]
    enc = {"pipeline": src, "positive": "a cube", "negative": "", "stop_at_clip_layer": 0}
    enc.update(encode)
    p["2"] = {"class_type": "VisionKitPromptEncode", "inputs": enc}
    p["3"] = {"class_type": "VisionKitLCMSampler", "inputs": {"pipeline": src, "conditioning": ["2", 0], **s}}
    p["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    if control:
        p.update(control)
        p["3"]["inputs"]["control"] = [list(control)[-1], 0]
    return p


def controlnet_chain(image: str, start=0.0, end=1.0, strength=1.0) -> dict:
    return {**load("10", image),
            "11": {"class_type": "VisionKitControlNetLoader", "inputs": {"controlnet_name": "tiny-sd15-controlnet"}},
            "12": {"class_type": "VisionKitControlNetApply", "inputs": {
                "controlnet": ["11", 0], "image": ["10", 0], "strength": strength, "start_percent": start,
                "end_percent": end}}}


def ipadapter_chain(image: str, adapter="tiny-ip-adapter_sd15.safetensors", encoder="tiny-clip-vision.safetensors",
                    start=0.0, end=1.0) -> dict:
    return {**load("10", image),
            "11": {"class_type": "VisionKitIPAdapterLoader", "inputs": {"ipadapter_name": adapter,
                                                                        "clip_vision_name": encoder}},
            "12": {"class_type": "VisionKitIPAdapterApply", "inputs": {
                "ipadapter": ["11", 0], "image": ["10", 0], "weight": 1.0, "start_percent": start,
                "end_percent": end, "mode": "standard", "combine": "average"}}}


def instantid_chain(image: str, adapter="tiny-instantid.bin") -> dict:
    return {**load("10", image),
            "11": {"class_type": "VisionKitInstantIDLoader", "inputs": {"instantid_name": adapter,
                                                                        "controlnet_name": "tiny-sdxl-identitynet"}},
            "13": {"class_type": "VisionKitFaceAnalysisLoader", "inputs": {"pack_name": "tiny_antelope",
                                                                           "provider": "auto", "det_size": 128,
                                                                           "det_thresh": 0.5}},
            "12": {"class_type": "VisionKitInstantIDApply", "inputs": {
                "instantid": ["11", 0], "face_model": ["13", 0], "face_image": ["10", 0], "ip_weight": 0.8,
                "controlnet_strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}}}


def canny(image: str, low=100, high=200) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitCannyEdges", "inputs": {"image": ["1", 0], "low_threshold": low,
                                                                  "high_threshold": high}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def caption(image: str, **over) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitCaptionLoader", "inputs": {"model_name": "tiny-blip", "dtype": "auto"}},
            "3": {"class_type": "VisionKitCaption", "inputs": {"caption_model": ["2", 0], "image": ["1", 0],
                                                               "prefix": "", "max_tokens": 30, "num_beams": 3,
                                                               **over}}}


def zero_shot(image: str, labels: str, template: str = "a photo of {}.") -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitCLIPLoader", "inputs": {"model_name": "tiny-clip", "dtype": "auto",
                                                                  "activation": "auto"}},
            "3": {"class_type": "VisionKitCLIPZeroShot", "inputs": {"clip_model": ["2", 0], "image": ["1", 0],
                                                                    "labels": labels, "template": template}}}


def everything(image: str, **over) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": "tiny_sam_vit.pth", "dtype": "fp32"}},
            "3": {"class_type": "VisionKitSAMSegmentEverything", "inputs": {
                "sam_model": ["2", 0], "image": ["1", 0], "points_per_side": 2, "pred_iou_thresh": 0.88,
                "stability_score_thresh": 0.95, "min_mask_region_area": 0, **over}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def faces(image: str, if_no_face: str = "error", pack: str = "tiny_buffalo", det_size: int = 128) -> dict:
    return {**load("1", image),
            "2": {"class_type": "VisionKitFaceAnalysisLoader", "inputs": {"pack_name": pack,
                                                                          "provider": "auto", "det_size": det_size,
                                                                          "det_thresh": 0.5}},
            "3": {"class_type": "VisionKitFaceDetect", "inputs": {"face_model": ["2", 0], "image": ["1", 0],
                                                                  "selection": "largest", "index": 0,
                                                                  "if_no_face": if_no_face}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


@dataclass
class T2Case:
    id: str
    prompt: Callable  # (comfy, tmp) -> API prompt
    # expected in node_errors (HTTP 400: each exactly once) or in the failed history entry's messages; a tuple:
    # every one of them (e.g. ComfyUI's own message and the input it names in its details)
    says: str | tuple = ""
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
    T2Case("steps 0", lambda c, t: generate(steps=0), says=("Value 0 smaller than min of 1", '"details": "steps"')),
    T2Case("denoise out of range", lambda c, t: generate(denoise=1.5),
           says=("Value 1.5 bigger than max of 1.0", '"details": "denoise"')),
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
    # ---- issue 19: SAM prompts of the wrong shape or size
    T2Case("points is a number", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"points": 5}'),
           says="'points' must be a list"),
    T2Case("boxes is an object", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"boxes": {"a": 1}}'),
           says="'boxes' must be a list"),
    T2Case("points nested 100k deep", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)),
                                                       '{"points": ' + "[" * 100_000 + "]" * 100_000 + "}"),
           says="nested too deeply"),
    T2Case("600 points", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), json.dumps({"points": [[1, 1, 1]] * 600})),
           says="at most 512 are allowed"),
    T2Case("600 boxes", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), json.dumps({"boxes": [[0, 0, 4, 4]] * 600})),
           says="at most 512 are allowed"),
    T2Case("100k points", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)),
                                           json.dumps({"points": [[1, 1, 1]] * 100_000})),
           says="100000 points"),
    T2Case("40 boxes decode in chunks", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), json.dumps(
        {"boxes": [[i % 8, i % 5, i % 8 + 6, i % 5 + 7] for i in range(40)]})), ok=_outputs_shape("4", 16, 16)),
    T2Case("point label 5", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"points": [[1, 2, 5]]}'),
           says="has label 5; use 1 (include) or 0 (exclude)"),
    T2Case("point without y", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"points": [[1]]}'),
           says="is not [x, y, label]"),
    T2Case("empty box", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"boxes": [[10, 10, 5, 20]]}'),
           says="is empty: x1 must be > x0"),
    T2Case("unknown points key", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"pointz": []}'),
           says="unknown key(s)"),
    T2Case("a 1 MB unknown key", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), json.dumps({"k" * 1_000_000: 1})),
           says="use 'points' and 'boxes'"),
    T2Case("points JSON is a list", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), "[1, 2]"),
           says="must be a JSON object"),
    T2Case("point at NaN", lambda c, t: sam(_png(c, "a.png", RGB(16, 16)), '{"points": [[NaN, 1, 1]]}'),
           says="is outside the 16×16 image"),
    # ---- sampler settings (issue 19: NaN said "whole number"; giant sizes ran for minutes)
    T2Case("guidance NaN", lambda c, t: generate(guidance=float("nan")), says="guidance must be a finite number"),
    T2Case("denoise NaN", lambda c, t: generate(denoise=float("nan")), says="denoise must be a finite number"),
    T2Case("height not a multiple of 8", lambda c, t: generate(height=100), says="height 100 is not a multiple of 8"),
    T2Case("width over the maximum", lambda c, t: generate(width=16392),
           says=("Value 16392 bigger than max of 16384", '"details": "width"')),
    T2Case("batch_size 0", lambda c, t: generate(batch_size=0),
           says=("Value 0 smaller than min of 1", '"details": "batch_size"')),
    T2Case("negative seed", lambda c, t: generate(seed=-1), says=("Value -1 smaller than min of 0", '"details": "seed"')),
    T2Case("unknown scheduler", lambda c, t: generate(scheduler="warp drive"),
           says=("Value not in list", "scheduler: 'warp drive' not in ['lcm', 'pipeline default',")),
    T2Case("steps not a number", lambda c, t: generate(steps="x"),
           says=("Failed to convert an input value to a INT value", "steps, x, invalid literal for int()")),
    T2Case("16384x16384 cannot fit", lambda c, t: generate(width=16384, height=16384),
           says="needs at least about"),
    # ---- prompt weighting (issue 19: 5,000 nested parentheses were a RecursionError)
    T2Case("5000 nested parentheses", lambda c, t: generate(encode={"positive": "(" * 5000 + "a" + ")" * 5000}),
           says="the positive prompt is too deeply nested: 5000 levels"),
    T2Case("deep brackets in the negative", lambda c, t: generate(encode={"negative": "[" * 80 + "x"}),
           says="the negative prompt is too deeply nested"),
    T2Case("clip layer out of range", lambda c, t: generate(encode={"stop_at_clip_layer": 5}),
           says=("Value 5 bigger than max of 0", '"details": "stop_at_clip_layer"')),
    # ---- upscale settings (issue 19: tile_size="x" was a comparison error)
    T2Case("tile_size not a number", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), tile="x"),
           says="tile_size must be a whole number, not 'x'"),
    T2Case("tile_size 16", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), tile=16),
           says="tile_size 16 must be 0 (whole image) or between 32"),
    T2Case("tile_pad 999", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), tile_pad=999),
           says=("Value 999 bigger than max of 256", '"details": "tile_pad"')),
    T2Case("outscale NaN", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), outscale=float("nan")),
           says="outscale must be a finite number"),
    T2Case("outscale 100", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), outscale=100.0),
           says=("Value 100.0 bigger than max of 16.0", '"details": "outscale"')),
    # ---- model names and files
    T2Case("model name with NUL", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), "tiny\x00.pth"),
           says="tries to leave its model folder"),
    T2Case("Windows absolute model path", lambda c, t: sam(_png(c, "a.png", RGB(8, 8)), "", "C:\\models\\x.pth"),
           says="is an absolute path"),
    T2Case("empty model name", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), ""),
           says="no model name was given"),
    T2Case("training args beside the weights", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), _with_training_args(c)),
           ok=_outputs_shape("4", 32, 32)),
    T2Case("pickled object in a legacy .pth", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)),
                                                                    _legacy_pickled(c, "upscale_models", t / "pwned")),
           says="(it needs io.open, which VisionKit does not load)"),
    T2Case("random bytes in a .pth", lambda c, t: sam(_png(c, "a.png", RGB(8, 8)), "",
                                                      _file(c, "sams", np.random.default_rng(0).bytes(4096))),
           says="could not be read as PyTorch weights"),
    T2Case("garbage .safetensors", lambda c, t: upscale(_png(c, "a.png", RGB(8, 8)), _file(
        c, "upscale_models", b"\xff" * 64, ext=".safetensors")), says="is not a valid safetensors file"),
    T2Case("Grounding DINO folder with a pickled .bin", lambda c, t: detect(
        _png(c, "a.png", RGB(16, 16)), model=_dino_folder_with_pickled_bin(c, t / "pwned")),
           says="contains pickled Python objects"),
    T2Case("two symlink loops in loras", lambda c, t: generate(lora=_looping_loras(c)),
           says="'missing-lora.safetensors' was not found in the loras folder"),
    T2Case("box_threshold 2", lambda c, t: detect(_png(c, "a.png", RGB(16, 16)), box_threshold=2.0),
           says=("Value 2.0 bigger than max of 1.0", '"details": "box_threshold"')),
    T2Case("max_detections negative", lambda c, t: detect(_png(c, "a.png", RGB(16, 16)), max_detections=-3),
           says=("Value -3 smaller than min of 0", '"details": "max_detections"')),
    # ---- issue 18: every VALIDATE_INPUTS names one input, so its message is in node_errors once
    T2Case("several bad upscale settings, one message each", lambda c, t: upscale(
        _png(c, "a.png", RGB(8, 8)), tile=16, tile_pad=999, outscale=100.0),
           says=("tile_size 16 must be 0 (whole image) or between 32", "Value 999 bigger than max of 256",
                 "Value 100.0 bigger than max of 16.0")),
    T2Case("missing detector and a bad dtype", lambda c, t: detect(_png(c, "a.png", RGB(16, 16)),
                                                                   model="groundingdino_swinb.pth", dtype="fp8"),
           says=("was not found in the grounding-dino folder", "dtype: 'fp8' not in")),
    T2Case("detection prompt and threshold both bad", lambda c, t: detect(_png(c, "a.png", RGB(16, 16)), prompt=" . ",
                                                                          box_threshold=2.0),
           says=("names nothing to find", "Value 2.0 bigger than max of 1.0")),
    T2Case("pipeline that is not there", lambda c, t: generate(pipe="nope.safetensors"),
           says="'nope.safetensors' is neither a checkpoint nor a diffusers folder"),
    T2Case("VAE that is not there", lambda c, t: generate(vae="nope-vae.safetensors"),
           says=("Value not in list", "vae_name: 'nope-vae.safetensors' not in")),
    T2Case("face pack that is not there", lambda c, t: faces(_png(c, "a.png", RGB(16, 16)), pack="antelopev2"),
           says="InsightFace pack 'antelopev2' was not found"),
    T2Case("face det_size not a multiple of 32", lambda c, t: faces(_png(c, "a.png", RGB(16, 16)), det_size=650),
           says="must be a multiple of 32"),
    T2Case("caption with 0 beams", lambda c, t: caption(_png(c, "a.png", RGB(16, 16)), num_beams=0),
           says=("Value 0 smaller than min of 1", '"details": "num_beams"')),
    T2Case("no CLIP labels and a template without {}", lambda c, t: zero_shot(_png(c, "a.png", RGB(16, 16)),
                                                                            " , \n", "a photo"),
           says="no labels were given"),
    T2Case("CLIP template without {}", lambda c, t: zero_shot(_png(c, "a.png", RGB(16, 16)), "a cat", "a photo"),
           says="has no {} where the label goes"),
    T2Case("segment everything with 500 points per side", lambda c, t: everything(_png(c, "a.png", RGB(16, 16)),
                                                                                 points_per_side=500),
           says=("Value 500 bigger than max of 64", '"details": "points_per_side"')),
    T2Case("ControlNet window that never acts", lambda c, t: generate(control=controlnet_chain(
        _png(c, "hint.png", RGB(64, 64)), start=0.8, end=0.2)), says="otherwise the ControlNet never acts"),
    T2Case("IP-Adapter window that never acts", lambda c, t: generate(control=ipadapter_chain(
        _png(c, "ref.png", RGB(32, 32)), start=0.5, end=0.5)), says="set start_percent below end_percent"),
    T2Case("IP-Adapter that is not there", lambda c, t: generate(control=ipadapter_chain(
        _png(c, "ref.png", RGB(32, 32)), adapter="nope-ip.safetensors")),
           says="'nope-ip.safetensors' was not found in the ipadapter folder"),
    T2Case("InstantID adapter that is not there", lambda c, t: generate(pipe="tiny-sdxl.safetensors", control=(
        instantid_chain(_png(c, "face.png", RGB(32, 32)), adapter="ip-adapter.bin"))),
           says="'ip-adapter.bin' was not found in the instantid folder"),
    T2Case("Canny low threshold above high", lambda c, t: canny(_png(c, "a.png", RGB(16, 16)), 200, 100),
           says="low_threshold (200) is above high_threshold (100); swap them"),
    T2Case("LoRA strength NaN", lambda c, t: generate(lora="for-tiny-sd15.safetensors", lora_strength=float("nan")),
           says="strength_model must be a finite number"),
]


def _error_text(node_errors: dict) -> str:
    """What ComfyUI shows of node_errors: each error's message and details (not the input configs it echoes)."""
    return "\n".join(json.dumps({"message": e.get("message"), "details": e.get("details")}, ensure_ascii=False)
                     for ne in node_errors.values() for e in ne.get("errors", []))


def repeated_messages(node_errors: dict) -> list:
    """Custom messages ComfyUI gives one node more than once (one per input its VALIDATE_INPUTS names)."""
    seen = collections.Counter()
    for node_id, ne in node_errors.items():
        for e in ne.get("errors", []):
            if e.get("type") == "custom_validation_failed":
                name = e.get("extra_info", {}).get("input_name", "")
                seen[(node_id, str(e.get("details", "")).removeprefix(f"{name} - "))] += 1
    return [(k, n) for k, n in seen.items() if n > 1]


def test_repeated_messages_are_found():
    """The measure itself, on what ComfyUI answered before issue 18 (one message per named input)."""
    errs = [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": f"{n} - the prompt ' . ' names nothing to find", "extra_info": {"input_name": n}}
            for n in ("prompt", "box_threshold")]
    assert repeated_messages({"3": {"errors": errs}}) == [(("3", "the prompt ' . ' names nothing to find"), 2)]
    assert repeated_messages({"3": {"errors": errs[:1]}, "4": {"errors": errs[1:]}}) == []
    assert _error_text({"3": {"errors": errs}}).count("names nothing to find") == 2


def test_t2_corpus_covers_both_kinds_of_answer():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert any(c.says for c in CASES) and any(c.ok for c in CASES)


@pytest.fixture()
def cleanup():
    yield
    while _CREATED:
        p = _CREATED.pop()
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


def good_prompt(comfy) -> dict:  # noqa: F811
    return upscale(_png(comfy, "good.png", RGB(8, 8)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_over_prompt(comfy, case: T2Case, tmp_path, cleanup):  # noqa: F811
    prompt = case.prompt(comfy, tmp_path)
    status, body = comfy.submit(prompt)
    says = (case.says,) if isinstance(case.says, str) else case.says
    if status == 400:  # refused up front by VALIDATE_INPUTS / ComfyUI's own checks
        node_errors = body.get("node_errors", {})
        text = _error_text(node_errors)
        assert case.says and node_errors, json.dumps(body)[:3000]
        for want in says:  # each message once: not repeated per input (issue 18)
            assert text.count(want) == 1, f"{want!r} occurs {text.count(want)} times in node_errors:\n{text[:3000]}"
        assert not repeated_messages(node_errors), repeated_messages(node_errors)
    else:
        assert status == 200, (status, body)
        entry = comfy.wait_history(body["prompt_id"], timeout=180)
        result = entry["status"]["status_str"]
        text = json.dumps(entry["status"].get("messages"), ensure_ascii=False, default=str)
        if case.says:
            assert result == "error", text[:3000]
            for want in says:
                assert want in text, text[:3000]
        else:
            assert result == "success", text[:3000]
            case.ok(comfy, entry)
    assert not (tmp_path / "pwned").exists(), "the pickled payload ran inside the server"
    # the server lives on and answers the next prompt
    assert comfy.run_prompt(good_prompt(comfy))["status"]["status_str"] == "success"
    assert not [e for e in comfy.get_json("/visionkit/cache")["entries"] if e.get("in_use")]
