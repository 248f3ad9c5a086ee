"""The bad-input corpus (issue 10): every node, fed what people really feed it, answers clearly and loses nothing.

One table. Each case runs a node (as the ComfyUI executor would: the node class, its VALIDATE_INPUTS where the
case is a widget value) with one bad or odd input, and then:
- an error case asserts the message names what was wrong AND how to fix it (two separate phrases), and that
  it is one of the pack's own clear error types, not a library's deep TypeError/RuntimeError;
- a "defined outcome" case (1×1 image, RGBA, no detection, a mask of another size ...) asserts the
  documented result instead;
- after every case the process is still usable: nothing in the cache is left pinned, and a good run of a
  cheap node still works and gives the same answer as before the case.

The same inputs over a real ComfyUI's /prompt are in tests/test_t2_bad_input.py.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.core import host  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402


class Ctx:
    """Nodes and loaded handles for one case; bad model files go into `extra` (a second models root)."""

    def __init__(self, pack, models_dir: Path, extra: Path, monkeypatch):
        self.pack, self.models_dir, self.extra, self.monkeypatch = pack, models_dir, extra, monkeypatch

    def node(self, name: str):
        return self.pack.NODE_CLASS_MAPPINGS[name]()

    def cls(self, name: str):
        return self.pack.NODE_CLASS_MAPPINGS[name]

    # loaded handles -------------------------------------------------------------------------
    def upscaler(self, name="tiny_RealESRGAN_x4plus.pth"):
        return self.node("VisionKitUpscaleModelLoader").load(name, "auto")[0]

    def sam(self):
        return self.node("VisionKitSAMLoader").load("tiny_sam_vit.pth", "fp32")[0]

    def dino(self):
        return self.node("VisionKitGroundingDINOLoader").load("tiny-grounding-dino", "auto")[0]

    def clip(self):
        return self.node("VisionKitCLIPLoader").load("tiny-clip", "auto", "auto")[0]

    def pipe(self, name="tiny-sd15.safetensors"):
        return self.node("VisionKitPipelineLoader").load(name, "auto", "(from checkpoint)")[0]

    def cond(self, pipe, text="a red cube"):
        return self.node("VisionKitPromptEncode").encode(pipe, text, "", 0)[0]

    def sample(self, pipe, cond, **kw):
        args = {"seed": 7, "steps": 2, "guidance": 1.0, "scheduler": "lcm", "width": 64, "height": 64,
                "batch_size": 1, "denoise": 1.0}
        args.update(kw)
        return self.node("VisionKitLCMSampler").sample(pipe, cond, **args)[0]

    def controlnet(self, name):
        return self.node("VisionKitControlNetLoader").load(name)[0]

    # files ----------------------------------------------------------------------------------
    def put(self, folder: str, name: str, source: str | None = None, data: bytes | None = None) -> str:
        """A file in the extra models root (copied from a fixture file or raw bytes); returns its name."""
        dst = self.extra / folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(self.models_dir / source, dst)
        else:
            dst.write_bytes(data or b"")
        return name


def img(h, w, c=3, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)


@dataclass
class Case:
    id: str
    run: Callable[[Ctx], Any]
    says: tuple = ()  # error cases: regexes that must all be in the message (what was wrong, how to fix it)
    check: Callable[[Ctx, Any], None] | None = None  # defined-outcome cases: the documented result
    errors: tuple = field(default_factory=lambda: (ValueError,))  # the pack's clear errors are ValueErrors

    def __post_init__(self):
        assert bool(self.says) != bool(self.check), f"{self.id}: either an error with its message or a result"


def validate(ctx: Ctx, node: str, **kw):
    """VALIDATE_INPUTS as /prompt calls it: True, or a message that becomes a node error."""
    ans = ctx.cls(node).VALIDATE_INPUTS(**kw)
    if ans is not True:
        raise ValueError(ans)
    return ans


def shape_is(*want):
    def check(ctx, out):
        assert tuple(out.shape) == tuple(want), f"shape {tuple(out.shape)}, documented {want}"
    return check


# ------------------------------------------------------------------------------------------ pickled payload
PAYLOAD_MARK = "visionkit_pwned"


class _Payload:
    """Unpickling this would create a file: the proof that weights-only loading executed nothing."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def pickled_pth(ctx: Ctx, folder: str, name: str) -> str:
    target = ctx.extra / f"{PAYLOAD_MARK}_{folder}"
    path = ctx.extra / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "evil": _Payload(str(target))}, path)
    return name


def payload_ran(ctx: Ctx) -> bool:
    return any(p.name.startswith(PAYLOAD_MARK) for p in ctx.extra.iterdir())


def truncated(ctx: Ctx, folder: str, source: str, name: str) -> str:
    data = (ctx.models_dir / source).read_bytes()
    return ctx.put(folder, name, data=data[: len(data) // 2])


# ------------------------------------------------------------------------------------------ the cases
def _cancel_after(ctx: Ctx, n: int):
    calls = {"n": 0}

    def throw():
        calls["n"] += 1
        if calls["n"] > n:
            raise InterruptedError("cancelled by the user (test)")

    ctx.monkeypatch.setattr(host, "throw_if_cancelled", throw)


def _cancel_sampler(ctx: Ctx):
    p = ctx.pipe()
    c = ctx.cond(p)
    _cancel_after(ctx, 1)
    return ctx.sample(p, c, steps=4)


def _cancel_upscale(ctx: Ctx):
    up = ctx.upscaler()
    _cancel_after(ctx, 2)
    return ctx.node("VisionKitUpscale").upscale(up, img(64, 64), 0.0, 32, 8)


def _sdxl_cond_into_sd15(ctx: Ctx):
    xl = ctx.pipe("tiny-sdxl.safetensors")
    return ctx.sample(ctx.pipe(), ctx.cond(xl))


def _control_on(ctx: Ctx, cn_name: str, pipe_name: str):
    cn = ctx.controlnet(cn_name)
    chain = ctx.node("VisionKitControlNetApply").apply(cn, img(64, 64), 1.0, 0.0, 1.0)[0]
    p = ctx.pipe(pipe_name)
    return ctx.node("VisionKitLCMSampler").sample(p, ctx.cond(p), 1, 2, 1.0, "lcm", 64, 64, 1, 1.0, control=chain)


def _lora_on(ctx: Ctx, lora: str, pipe_name: str):
    return ctx.node("VisionKitLoraLoader").load(ctx.pipe(pipe_name), lora, 1.0, 1.0)


def _no_detection_check(ctx, out):
    boxes, preview, mask, text = out
    assert boxes == [[]] and float(mask.sum()) == 0 and tuple(mask.shape) == (1, 32, 32)
    assert tuple(preview.shape) == (1, 32, 32, 3)


def _grounded_nothing_check(ctx, out):
    mask, boxes = out[0], out[1]
    assert boxes == [[]] and tuple(mask.shape) == (1, 32, 32) and float(mask.sum()) == 0


def _boxes_inside(w, h):
    def check(ctx, out):
        for b in out[0][0]:
            x0, y0, x1, y1 = b["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h, b
        assert tuple(out[2].shape) == (1, h, w)
    return check


def _sam_mask_shape(h, w, b=1):
    def check(ctx, out):
        assert tuple(out[0].shape) == (b, h, w) and out[0].dtype == torch.float32
    return check


def _pickle_refused(ctx: Ctx, folder: str, loader: str, **kw):
    name = pickled_pth(ctx, folder, "evil.pth")
    try:
        return ctx.node(loader).load(name, **kw)
    finally:
        assert not payload_ran(ctx), "the pickled payload ran: weights-only loading is broken"


# ---- identity and style
def _faces(c: Ctx, pack="tiny_buffalo"):
    return c.node("VisionKitFaceAnalysisLoader").load(pack, "auto", 128, 0.5)[0]


def _ipadapter(c: Ctx, name):
    return c.node("VisionKitIPAdapterLoader").load(name, "tiny-clip-vision.safetensors")[0]


def _ip_on(c: Ctx, ip_name: str, pipe_name: str):
    chain = c.node("VisionKitIPAdapterApply").apply(_ipadapter(c, ip_name), img(32, 32), 1.0, 0.0, 1.0, "standard",
                                                    "average")[0]
    p = c.pipe(pipe_name)
    return c.node("VisionKitLCMSampler").sample(p, c.cond(p), 1, 2, 1.0, "lcm", 64, 64, 1, 1.0, control=chain)


def _instantid(c: Ctx):
    return c.node("VisionKitInstantIDLoader").load("tiny-instantid.bin", "tiny-sdxl-identitynet")[0]


def face_like():
    """A bright square on black: a "face" for the tiny fixture detector (see tests/test_faces.py)."""
    x = torch.zeros(1, 96, 96, 3)
    x[:, 24:72, 30:78] = torch.tensor([0.9, 0.75, 0.6])
    return x


def _empty_faces_check(c, out):
    faces, preview, mask, text = out
    assert len(faces) == 1 and len(faces[0]) == 0 and float(mask.sum()) == 0 and tuple(preview.shape) == (1, 64, 64, 3)


UP = "VisionKitUpscale"
SEG = "VisionKitSAMSegment"
DET = "VisionKitGroundingDINODetect"
GSAM = "VisionKitGroundedSAM"

CASES = [
    # ---- images: sizes and channels
    Case("empty image", lambda c: c.node(UP).upscale(c.upscaler(), torch.zeros(1, 0, 5, 3), 0.0, 64, 8),
         says=(r"image is empty", r"connect an image with pixels")),
    Case("zero-batch image", lambda c: c.node(SEG).run(c.sam(), torch.zeros(0, 8, 8, 3), points=""),
         says=(r"empty", r"connect")),
    Case("1x1 image upscaled", lambda c: c.node(UP).upscale(c.upscaler(), img(1, 1), 0.0, 64, 8)[0],
         check=shape_is(1, 4, 4, 3)),
    Case("1x1 image segmented", lambda c: c.node(SEG).run(c.sam(), img(1, 1), points='{"points": [[0, 0, 1]]}'),
         check=_sam_mask_shape(1, 1)),
    Case("1x1 image detected", lambda c: c.node(DET).detect(c.dino(), img(1, 1), "cat .", 0.35, 0.25, 0, "all",
                                                            False), check=_boxes_inside(1, 1)),
    Case("16384x16 strip upscaled in tiles", lambda c: c.node(UP).upscale(c.upscaler(), img(16, 16384), 0.0, 512, 8)[0],
         check=shape_is(1, 64, 65536, 3)),
    Case("16384x16 strip segmented", lambda c: c.node(SEG).run(c.sam(), img(16, 16384),
                                                               points='{"boxes": [[100, 2, 900, 14]]}'),
         check=_sam_mask_shape(16, 16384)),
    Case("16384x16 strip detected", lambda c: c.node(DET).detect(c.dino(), img(16, 16384), "cat .", 0.3, 0.25, 0,
                                                                 "all", False), check=_boxes_inside(16384, 16)),
    Case("RGBA image upscaled keeps alpha", lambda c: c.node(UP).upscale(c.upscaler(), img(8, 8, 4), 0.0, 64, 8)[0],
         check=shape_is(1, 32, 32, 4)),
    Case("grayscale image upscaled", lambda c: c.node(UP).upscale(c.upscaler(), img(8, 8, 1), 0.0, 64, 8)[0],
         check=shape_is(1, 32, 32, 3)),
    Case("RGBA image segmented", lambda c: c.node(SEG).run(c.sam(), img(24, 24, 4), points='{"points": [[5, 5, 1]]}'),
         check=_sam_mask_shape(24, 24)),
    Case("grayscale image detected", lambda c: c.node(DET).detect(c.dino(), img(24, 24, 1), "cat .", 0.3, 0.25, 0,
                                                                  "all", False), check=_boxes_inside(24, 24)),
    Case("5-channel image", lambda c: c.node(UP).upscale(c.upscaler(), img(8, 8, 5), 0.0, 64, 8),
         says=(r"5 channels", r"RGB \(3\), RGBA \(4\) or grayscale")),
    Case("not an image at all", lambda c: c.node("VisionKitCannyEdges").run("photo.png", 100, 200),
         says=(r"not an IMAGE", r"connect an IMAGE")),
    Case("NaN in an IMAGE", lambda c: c.node(UP).upscale(c.upscaler(), img(8, 8) * float("nan"), 0.0, 64, 8),
         says=(r"NaN or infinite", r"clean it|check its inputs")),
    Case("inf in an IMAGE", lambda c: c.node(SEG).run(c.sam(), img(8, 8).index_fill(1, torch.tensor([2]),
                                                                                       float("inf")), points=""),
         says=(r"NaN or infinite", r"clean it|check its inputs")),
    Case("NaN in an image for the sampler", lambda c: c.sample(c.pipe(), c.cond(c.pipe()), denoise=0.5,
                                                               image=img(64, 64) * float("nan")),
         says=(r"NaN or infinite", r"clean it|check its inputs")),
    # ---- masks
    Case("mask batch differs from image batch (SAM)", lambda c: c.node(SEG).run(
        c.sam(), img(16, 16, b=2), mask_prompt=torch.ones(3, 16, 16)),
         says=(r"batch of 3 but image has 2", r"one mask for all images or one per image")),
    Case("mask batch differs from image batch (inpaint)", lambda c: c.sample(
        c.pipe(), c.cond(c.pipe()), image=img(64, 64, b=2), mask=torch.ones(3, 64, 64)),
         says=(r"3", r"2", r"one mask for all images or one per image")),
    Case("mask of another size is resized (SAM)", lambda c: c.node(SEG).run(
        c.sam(), img(32, 32), mask_prompt=torch.ones(1, 16, 16)), check=_sam_mask_shape(32, 32)),
    Case("mask of another size is resized (inpaint)", lambda c: c.sample(
        c.pipe(), c.cond(c.pipe()), image=img(64, 64), mask=torch.ones(1, 16, 16)), check=shape_is(1, 64, 64, 3)),
    Case("mask of the wrong rank", lambda c: c.node(SEG).run(c.sam(), img(16, 16), mask_prompt=torch.ones(16)),
         says=(r"shape \(16,\); a MASK is \(batch, height, width\)", r"connect a MASK output")),
    # ---- prompts and points
    Case("empty detection prompt", lambda c: c.node(DET).detect(c.dino(), img(32, 32), "", 0.35, 0.25, 0, "all", False),
         says=(r"names nothing to find", r"write what to detect")),
    Case("prompt of only separators", lambda c: c.node(DET).detect(c.dino(), img(32, 32), " . , . ", 0.35, 0.25, 0,
                                                                   "all", False),
         says=(r"names nothing to find", r"write what to detect")),
    Case("no detection is an empty result", lambda c: c.node(DET).detect(c.dino(), img(32, 32), "cat .", 1.0, 1.0, 0,
                                                                         "all", False), check=_no_detection_check),
    Case("no detection gives an empty mask (GroundedSAM)", lambda c: c.node(GSAM).run(
        img(32, 32), c.dino(), c.sam(), "cat .", 1.0, 1.0, "all", False, 0, "best score", 0.0, 0, 0, "union"),
         check=_grounded_nothing_check),
    Case("empty generation prompt is allowed", lambda c: c.cond(c.pipe(), "").prompt_embeds,
         check=lambda c, out: (out.shape[0] == 1 and torch.isfinite(out).all()) or pytest.fail("bad embeds")),
    Case("empty CLIP labels", lambda c: c.node("VisionKitCLIPZeroShot").classify(c.clip(), img(32, 32), "", ""),
         says=(r"no labels", r"one per line")),
    Case("CLIP labels of only separators", lambda c: validate(c, "VisionKitCLIPZeroShot", labels="\n \n\t\n"),
         says=(r"no labels|label", r"one per line")),
    Case("points outside the image", lambda c: c.node(SEG).run(c.sam(), img(32, 32),
                                                               points='{"points": [[50, 5, 1]]}'),
         says=(r"\(50, 5\) is outside the 32×32 image", r"x from 0 to width-1")),
    Case("box entirely outside the image prompts nothing", lambda c: c.node(SEG).run(
        c.sam(), img(32, 32), points='{"boxes": [[40, 40, 60, 60]]}'),
         check=lambda c, out: (float(out[0].sum()) == 0 and out[2] and '[[]]' in out[2].replace(" ", ""))
         or pytest.fail(f"documented: empty mask, no object; got {out[2]}")),
    Case("box partly outside the image is clipped", lambda c: c.node(SEG).run(
        c.sam(), img(32, 32), points='{"boxes": [[20, 20, 60, 60]]}'),
         check=lambda c, out: ('"box": [20.0, 20.0, 32, 32]' in out[2])
         or pytest.fail(f"documented: the box clipped to the image; got {out[2]}")),
    Case("points that are not JSON", lambda c: validate(c, SEG, points='{"points": [[1, 2'),
         says=(r"not valid JSON", r'"points": \[\[x, y, 1\]')),
    Case("point with label 2", lambda c: c.node(SEG).run(c.sam(), img(32, 32), points='{"points": [[1, 2, 2]]}'),
         says=(r"label 2", r"use 1 \(include\) or 0 \(exclude\)")),
    Case("empty box", lambda c: c.node(SEG).run(c.sam(), img(32, 32), points='{"boxes": [[10, 10, 5, 20]]}'),
         says=(r"is empty", r"x1 must be > x0")),
    Case("no SAM prompt is an empty mask", lambda c: c.node(SEG).run(c.sam(), img(20, 30), points="{}"),
         check=lambda c, out: (tuple(out[0].shape) == (1, 20, 30) and float(out[0].sum()) == 0) or pytest.fail(
             "not an empty mask")),
    # ---- wrong model in the wrong loader
    Case("SAM file in the DINO loader", lambda c: c.node("VisionKitGroundingDINOLoader").load(
        c.put("grounding-dino", "sam_in_dino.pth", "sams/tiny_sam_vit.pth"), "auto"),
         says=(r"SAM|segment-anything", r"sams")),
    Case("DINO file in the SAM loader", lambda c: c.node("VisionKitSAMLoader").load(
        c.put("sams", "dino_in_sam.pth", "grounding-dino/groundingdino_tiny_ogc.pth"), "fp32"),
         says=(r"not a segment-anything checkpoint", r"Grounding DINO|grounding-dino")),
    Case("Real-ESRGAN file in the SAM loader", lambda c: c.node("VisionKitSAMLoader").load(
        c.put("sams", "esrgan_in_sam.pth", "upscale_models/tiny_RealESRGAN_x4plus.pth"), "fp32"),
         says=(r"not a segment-anything checkpoint.*Real-ESRGAN", r"goes in models/upscale_models")),
    Case("SAM file in the upscale loader", lambda c: c.node("VisionKitUpscaleModelLoader").load(
        c.put("upscale_models", "sam_in_upscale.pth", "sams/tiny_sam_vit.pth"), "auto"),
         says=(r"not an upscale model.*SAM \(segment-anything\)", r"goes in models/sams, for 'VisionKit Load SAM Model'")),
    Case("LoRA file in the pipeline loader", lambda c: c.node("VisionKitPipelineLoader").load(
        c.put("checkpoints", "lora_as_ckpt.safetensors", "loras/for-tiny-sd15.safetensors"), "auto",
        "(from checkpoint)"), says=(r"LoRA", r"loras")),
    Case("ControlNet file in the LoRA loader", lambda c: c.node("VisionKitLoraLoader").load(
        c.pipe(), c.put("loras", "cn_as_lora.safetensors", "controlnet/tiny-sd15-controlnet.safetensors"), 1.0, 1.0),
         says=(r"ControlNet", r"controlnet")),
    Case("checkpoint in the ControlNet loader", lambda c: c.node("VisionKitControlNetLoader").load(
        c.put("controlnet", "ckpt_as_cn.safetensors", "checkpoints/tiny-sd15.safetensors")),
         says=(r"checkpoint|pipeline", r"checkpoints")),
    Case("SD1.5 ControlNet on an SDXL pipeline", lambda c: _control_on(c, "tiny-sd15-controlnet.safetensors",
                                                                       "tiny-sdxl.safetensors"),
         says=(r"ControlNet is SD1\.5, the pipeline is SDXL", r"pick a ControlNet made for SDXL")),
    Case("SDXL ControlNet on an SD1.5 pipeline", lambda c: _control_on(c, "tiny-sdxl-controlnet.safetensors",
                                                                       "tiny-sd15.safetensors"),
         says=(r"ControlNet is SDXL, the pipeline is SD1\.5", r"pick a ControlNet made for SD1\.5")),
    Case("SD1.5 LoRA on an SDXL pipeline", lambda c: _lora_on(c, "real-size-sd15-lora.safetensors",
                                                              "tiny-sdxl.safetensors"),
         says=(r"LoRA is SD1\.5, the pipeline is SDXL", r"pick a LoRA made for SDXL")),
    Case("SDXL LoRA on an SD1.5 pipeline", lambda c: _lora_on(c, "real-size-sdxl-lora.safetensors",
                                                              "tiny-sd15.safetensors"),
         says=(r"LoRA is SDXL, the pipeline is SD1\.5", r"pick a LoRA made for SD1\.5")),
    Case("SDXL prompt into an SD1.5 sampler", _sdxl_cond_into_sd15,
         says=(r"encoded for SDXL, the pipeline is SD1\.5", r"encode the prompt with this pipeline")),
    # ---- broken and unsafe files
    Case("truncated safetensors", lambda c: c.node("VisionKitUpscaleModelLoader").load(
        truncated(c, "upscale_models", "upscale_models/tiny_realesr-general-x4v3.safetensors", "cut.safetensors"),
        "auto"), says=(r"not a valid safetensors file.*truncated", r"delete it and download it again")),
    Case("truncated .pth", lambda c: c.node("VisionKitSAMLoader").load(
        truncated(c, "sams", "sams/tiny_sam_vit.pth", "cut.pth"), "fp32"),
         says=(r"could not be read|truncated", r"download it again")),
    Case("zero-byte file", lambda c: c.node("VisionKitSAMLoader").load(c.put("sams", "empty.pth", data=b""), "fp32"),
         says=(r"empty \(zero-byte\) file", r"download it again")),
    Case("pickled object in a .pth (SAM)", lambda c: _pickle_refused(c, "sams", "VisionKitSAMLoader", dtype="fp32"),
         says=(r"pickled Python objects", r"\.safetensors version")),
    Case("pickled object in a .pth (upscale)", lambda c: _pickle_refused(c, "upscale_models",
                                                                         "VisionKitUpscaleModelLoader", dtype="auto"),
         says=(r"pickled Python objects", r"\.safetensors version")),
    Case("model name with ..", lambda c: validate(c, "VisionKitSAMLoader", model_name="../sams/tiny_sam_vit.pth"),
         says=(r"tries to leave its model folder", r"as listed in the node's dropdown")),
    Case("absolute model path", lambda c: validate(c, "VisionKitUpscaleModelLoader", model_name=str(
        c.models_dir / "upscale_models" / "tiny_RealESRGAN_x4plus.pth")),
         says=(r"absolute|leave its model folder", r"as listed in the node's dropdown")),
    Case("model name not in the folder", lambda c: validate(c, "VisionKitGroundingDINOLoader",
                                                            model_name="groundingdino_swinb.pth"),
         says=(r"was not found in the grounding-dino folder", r"Put .* into")),
    Case("model name loaded directly, not in the folder", lambda c: c.node("VisionKitCLIPLoader").load(
        "no-such-clip", "auto", "auto"), says=(r"was not found in the clip_models folder", r"Put .* into"),
         errors=(ValueError, FileNotFoundError)),
    # ---- generation settings
    # the sampler has no VALIDATE_INPUTS (one message per named input): ComfyUI's min/max refuse out-of-range
    # widgets at /prompt (tests/test_t2_bad_input.py), the node refuses the rest when it runs
    Case("width not a multiple of 8", lambda c: c.sample(c.pipe(), c.cond(c.pipe()), width=100),
         says=(r"width 100 is not a multiple of 8", r"use 96 or 104")),
    Case("height not a multiple of 8 at run time", lambda c: c.sample(c.pipe(), c.cond(c.pipe()), height=60),
         says=(r"height 60 is not a multiple of 8", r"use 56 or 64")),
    Case("image of odd size is padded, output keeps its size", lambda c: c.sample(
        c.pipe(), c.cond(c.pipe()), image=img(61, 45), denoise=0.5), check=shape_is(1, 61, 45, 3)),
    Case("steps 0", lambda c: c.sample(c.pipe(), c.cond(c.pipe()), steps=0),
         says=(r"steps 0 is outside 1\.\.100", r"set it within that range")),
    Case("denoise above 1", lambda c: c.sample(c.pipe(), c.cond(c.pipe()), denoise=1.5, image=img(64, 64)),
         says=(r"denoise 1\.5 is outside 0\.0\.\.1\.0", r"0 keeps the image, 1 repaints")),
    Case("ControlNet window that never acts", lambda c: c.node("VisionKitControlNetApply").apply(
        c.controlnet("tiny-sd15-controlnet.safetensors"), img(64, 64), 1.0, 0.8, 0.2),
         says=(r"never acts", r"set start_percent below end_percent")),
    Case("upscale tile smaller than allowed", lambda c: c.node(UP).upscale(c.upscaler(), img(8, 8), 0.0, 8, 64),
         says=(r"tile_size 8", r"must be 0 \(whole image\) or between 32 and 8192")),
    Case("upscale tile padding larger than the tile", lambda c: c.node(UP).upscale(c.upscaler(), img(40, 40), 0.0,
                                                                                   32, 200)[0],
         check=shape_is(1, 160, 160, 3)),
    # ---- identity and style
    Case("no face (empty result)", lambda c: c.node("VisionKitFaceDetect").detect(
        _faces(c), torch.zeros(1, 64, 64, 3), "largest", 0, "empty result"), check=_empty_faces_check),
    Case("no face (error)", lambda c: c.node("VisionKitFaceDetect").detect(
        _faces(c), torch.zeros(2, 64, 64, 3), "largest", 0, "error"), says=(r"no face", r"image|batch index")),
    Case("no face to compare", lambda c: c.node("VisionKitFaceSimilarity").compare(
        "largest", "mean", "error", face_model=_faces(c), image_a=torch.zeros(1, 64, 64, 3),
        image_b=torch.zeros(1, 64, 64, 3)), says=(r"no face", r"image")),
    Case("no face for InstantID", lambda c: c.node("VisionKitInstantIDApply").apply(
        _instantid(c), _faces(c, "tiny_antelope"), torch.zeros(1, 64, 64, 3), 0.8, 0.8, 0.0, 1.0),
         says=(r"no face was found in the face image", r"use another image or crop it closer")),
    Case("face pack that is not there", lambda c: validate(c, "VisionKitFaceAnalysisLoader", pack_name="antelopev2"),
         says=(r"antelopev2", r"insightface")),
    Case("SD1.5 IP-Adapter on an SDXL pipeline", lambda c: _ip_on(c, "tiny-ip-adapter_sd15.safetensors",
                                                                  "tiny-sdxl.safetensors"),
         says=(r"IP-Adapter is SD1\.5, the pipeline is SDXL", r"pick a IP-Adapter made for SDXL|made for SDXL")),
    Case("SDXL IP-Adapter on an SD1.5 pipeline", lambda c: _ip_on(c, "tiny-ip-adapter_sdxl.safetensors",
                                                                  "tiny-sd15.safetensors"),
         says=(r"IP-Adapter is SDXL, the pipeline is SD1\.5", r"made for SD1\.5")),
    Case("InstantID on an SD1.5 pipeline", lambda c: c.node("VisionKitLCMSampler").sample(
        c.pipe(), c.cond(c.pipe()), 1, 2, 1.0, "lcm", 64, 64, 1, 1.0, control=c.node("VisionKitInstantIDApply").apply(
            _instantid(c), _faces(c, "tiny_antelope"), face_like(), 0.8, 0.8, 0.0, 1.0)[0]),
         says=(r"InstantID is SDXL, the pipeline is SD1\.5", r"load a SDXL pipeline|made for SD1\.5")),
    Case("SAM file in the IP-Adapter loader", lambda c: c.node("VisionKitIPAdapterLoader").load(
        c.put("ipadapter", "sam_as_ip.safetensors", "upscale_models/tiny_realesr-general-x4v3.safetensors"),
        "tiny-clip-vision.safetensors"), says=(r"Real-ESRGAN", r"upscale_models")),
    Case("LoRA file in the InstantID loader", lambda c: c.node("VisionKitInstantIDLoader").load(
        c.put("instantid", "lora_as_iid.safetensors", "loras/for-tiny-sd15.safetensors"), "tiny-sdxl-identitynet"),
         says=(r"LoRA", r"loras")),
    # ---- cancel in the middle (the cache stays consistent: checked after every case)
    Case("cancel in the middle of a sampler run", _cancel_sampler, says=(r"cancelled by the user", r"test"),
         errors=(InterruptedError,)),
    Case("cancel in the middle of an upscale", _cancel_upscale, says=(r"cancelled by the user", r"test"),
         errors=(InterruptedError,)),
    # ---- issue 20: captions (BLIP), image similarity (DINOv2), segment everything (SAM), image labels (ViT)
    Case("caption model that is not there", lambda c: validate(c, "VisionKitCaptionLoader",
                                                               model_name="blip-image-captioning-base"),
         says=(r"'blip-image-captioning-base' was not found in the blip folder", r"Put a BLIP captioning folder")),
    Case("DINOv2 folder in the caption loader", lambda c: c.node("VisionKitCaptionLoader").load(
        _folder_copy(c, "dinov2/tiny-dinov2", "blip", "dino-as-blip"), "auto"),
         says=(r"not a BLIP captioning folder", r"load it with 'VisionKit Load Image Similarity Model \(DINOv2\)'")),
    Case("caption with 0 beams", lambda c: c.node("VisionKitCaption").caption(
        _vision(c, "VisionKitCaptionLoader", "tiny-blip"), img(16, 16), "", 30, 0),
         says=(r"num_beams must be a whole number from 1 to 16", r"1 = greedy decoding")),
    Case("empty image to caption", lambda c: c.node("VisionKitCaption").caption(
        _vision(c, "VisionKitCaptionLoader", "tiny-blip"), torch.zeros(1, 0, 8, 3), "", 10, 1),
         says=(r"image is empty", r"connect an image with pixels")),
    Case("1×1 image to image similarity", lambda c: c.node("VisionKitImageSimilarity").compare(
        _vision(c, "VisionKitImageSimilarityLoader", "tiny-dinov2"), img(1, 1), img(1, 1, seed=1))["result"],
         check=lambda c, out: (isinstance(out[0], float) and -1.0 <= out[0] <= 1.0 + 1e-6) or _fail(out)),
    Case("RGBA batch ranked by similarity keeps its alpha", lambda c: c.node("VisionKitRankSimilarImages").rank(
        _vision(c, "VisionKitImageSimilarityLoader", "tiny-dinov2"), img(24, 24), img(24, 24, c=4, b=3))["result"][0],
         check=shape_is(3, 24, 24, 4)),
    Case("ViT folder without a label head", lambda c: c.node("VisionKitImageLabelsLoader").load(
        _folder_copy(c, "vit/tiny-vit", "vit", "vit-backbone", architectures=["ViTModel"]), "auto"),
         says=(r"not an image classifier", r"use e\.g\. google/vit-base-patch16-224")),
    Case("image labels top_k 0", lambda c: validate(c, "VisionKitImageLabels", top_k=0),
         says=(r"top_k must be a whole number", r"from 1 to 1000")),
    Case("segment everything with 500 points per side", lambda c: c.node("VisionKitSAMSegmentEverything").run(
        c.sam(), img(20, 30), points_per_side=500),
         says=(r"points_per_side must be a whole number from 1 to 64", r"16 is 4× faster")),
    Case("segment everything that finds nothing is one empty mask", lambda c: c.node(
        "VisionKitSAMSegmentEverything").run(c.sam(), img(20, 30), points_per_side=1, pred_iou_thresh=1.0,
                                             stability_score_thresh=1.0)[0],
         check=lambda c, out: (tuple(out.shape) == (1, 20, 30) and float(out.sum()) == 0) or _fail(out.shape)),
]


def _folder_copy(ctx: Ctx, source: str, folder: str, name: str, **config) -> str:
    """A copy of a fixture model folder in the extra models root (config.json entries replaced by `config`)."""
    import json

    dst = ctx.extra / folder / name
    shutil.copytree(ctx.models_dir / source, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    return name


def _vision(ctx: Ctx, loader: str, name: str):
    return ctx.node(loader).load(name, "auto")[0]


def _fail(what):
    raise AssertionError(f"not the documented outcome: {what!r}")


# ------------------------------------------------------------------------------------------ issue 20: pose and depth
def _pose(c: Ctx):
    return c.node("VisionKitPoseLoader").load("tiny-vitpose", "fp32")[0]


def _depth(c: Ctx):
    return c.node("VisionKitDepthLoader").load("tiny-depth-anything", "fp32")[0]


def _copy_folder(c: Ctx, folder: str, source: str, name: str, drop: tuple = ()) -> str:
    dst = c.extra / folder / name
    shutil.copytree(c.models_dir / source, dst)
    for f in drop:
        (dst / f).unlink()
    return name


def _no_people(b, h, w):
    def check(ctx, out):
        import json

        pose_img, preview, text = out
        assert tuple(pose_img.shape) == (b, h, w, 3) and float(pose_img.abs().max()) == 0.0, "not a black pose"
        assert tuple(preview.shape) == (b, h, w, 3)
        assert [f["people"] for f in json.loads(text)] == [[]] * b
    return check


def _pose_shape(b, h, w, people):
    def check(ctx, out):
        import json

        assert tuple(out[0].shape) == (b, h, w, 3)
        assert [len(f["people"]) for f in json.loads(out[2])] == [people] * b
    return check


def _depth_shape(b, h, w):
    def check(ctx, out):
        image, raw = out
        assert tuple(image.shape) == (b, h, w, 3) and tuple(raw.shape) == (b, h, w)
        assert torch.isfinite(raw).all() and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    return check


POSE, DEPTH = "VisionKitPoseEstimate", "VisionKitDepthEstimate"
CASES += [
    Case("pose: no person box (empty detection)", lambda c: c.node(POSE).estimate(_pose(c), img(32, 24, b=2), 0.3,
                                                                                  boxes=[[], []]),
         check=_no_people(2, 32, 24)),
    Case("pose: boxes outside the image", lambda c: c.node(POSE).estimate(_pose(c), img(32, 24), 0.3,
                                                                          boxes=[[[100, 100, 200, 200]]]),
         check=_no_people(1, 32, 24)),
    Case("pose: 1x1 image", lambda c: c.node(POSE).estimate(_pose(c), img(1, 1), 0.3), check=_pose_shape(1, 1, 1, 1)),
    Case("pose: RGBA image", lambda c: c.node(POSE).estimate(_pose(c), img(30, 20, 4), 0.3),
         check=_pose_shape(1, 30, 20, 1)),
    Case("pose: boxes for another batch", lambda c: c.node(POSE).estimate(
        _pose(c), img(16, 16, b=3), 0.3, boxes=[[[0, 0, 8, 8]], [[0, 0, 8, 8]]]),
         says=(r"boxes has 2 image\(s\) of boxes but the image batch has 3", r"one list of boxes for all images")),
    Case("pose: boxes that are not boxes", lambda c: c.node(POSE).estimate(_pose(c), img(16, 16), 0.3,
                                                                           boxes=[[{"x": 1}]]),
         says=(r"is not a box", r"'box': \[x0, y0, x1, y1\]")),
    Case("pose: threshold above 1", lambda c: validate(c, POSE, threshold=1.5),
         says=(r"threshold", r"a number from 0 to 1")),
    Case("pose model that is not there", lambda c: validate(c, "VisionKitPoseLoader", model_name="vitpose-base-simple"),
         says=(r"vitpose-base-simple.*not found", r"usyd-community/vitpose-base-simple")),
    Case("depth folder in the pose loader", lambda c: c.node("VisionKitPoseLoader").load(
        _copy_folder(c, "pose", "depth/tiny-depth-anything", "depth-as-pose")),
         says=(r"Depth Anything depth model", r"models/depth")),
    Case("pose folder without weights", lambda c: c.node("VisionKitPoseLoader").load(
        _copy_folder(c, "pose", "pose/tiny-vitpose", "half-downloaded", drop=("model.safetensors",))),
         says=(r"no weights", r"download them")),
    Case("depth: 1x1 image", lambda c: c.node(DEPTH).estimate(_depth(c), img(1, 1)), check=_depth_shape(1, 1, 1)),
    Case("depth: 16x4096 strip", lambda c: c.node(DEPTH).estimate(_depth(c), img(16, 4096)),
         check=_depth_shape(1, 16, 4096)),
    Case("depth: RGBA batch", lambda c: c.node(DEPTH).estimate(_depth(c), img(20, 30, 4, b=2)),
         check=_depth_shape(2, 20, 30)),
    Case("depth: NaN in the image", lambda c: c.node(DEPTH).estimate(_depth(c), img(8, 8) * float("nan")),
         says=(r"NaN or infinite", r"clean it|check its inputs")),
    Case("depth: resolution not a multiple", lambda c: validate(c, DEPTH, resolution=5),
         says=(r"resolution", r"0 \(the model's own")),
    Case("depth model that is not there", lambda c: validate(c, "VisionKitDepthLoader",
                                                             model_name="Depth-Anything-V2-Small-hf"),
         says=(r"Depth-Anything-V2-Small-hf.*not found", r"depth-anything/Depth-Anything-V2-Small-hf")),
    Case("pose folder in the depth loader", lambda c: c.node("VisionKitDepthLoader").load(
        _copy_folder(c, "depth", "pose/tiny-vitpose", "pose-as-depth")),
         says=(r"ViTPose pose model", r"models/pose")),
    Case("broken config.json in the depth loader", lambda c: c.node("VisionKitDepthLoader").load(
        c.put("depth", "broken/config.json", data=b"{not json")[:-len("/config.json")]),
         says=(r"cannot read its config.json", r"download the folder again")),
]
# ------------------------------------------------------------------------------------------ end of issue 20


def test_the_corpus_is_big_enough_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture()
def ctx(pack, models_dir, tmp_path, monkeypatch):
    extra = tmp_path / "extra_models"
    extra.mkdir()
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", f"{models_dir}{os.pathsep}{extra}")
    return Ctx(pack, models_dir, extra, monkeypatch)


def good_run(ctx: Ctx):
    """A cheap run that must work, and give the same answer, after any bad input."""
    torch.manual_seed(0)
    out = ctx.node(UP).upscale(ctx.upscaler(), img(8, 8, seed=5), 0.0, 64, 8)[0]
    mask = ctx.node(SEG).run(ctx.sam(), img(16, 16, seed=5), points='{"points": [[4, 4, 1]]}')[0]
    return out, mask


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx):
    before = good_run(ctx)
    if case.says:
        with pytest.raises(Exception) as info:
            case.run(ctx)
        ex = info.value
        assert isinstance(ex, case.errors), f"{type(ex).__name__} from deep inside: {ex}"
        msg = str(ex)
        for pattern in case.says:
            assert re.search(pattern, msg, re.S), f"message lacks /{pattern}/: {msg}"
    else:
        case.check(ctx, case.run(ctx))
    ctx.monkeypatch.setattr(host, "throw_if_cancelled", lambda: None)
    entries = get_cache().entries()
    assert not [e["key"] for e in entries if e["in_use"]], "a model was left pinned"
    after = good_run(ctx)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1]), "a cached model was changed"
