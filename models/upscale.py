"""Real-ESRGAN: architecture detection from the state-dict, and loading through the shared cache.

Architectures come from realesrgan/basicsr (RRDBNet, SRVGGNetCompact), imported with the
torchvision fix in compat.py. Everything about a file (architecture, blocks, features, scale) is read
from its tensors, never from its name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .cache import Loaded, ModelSpec, get_cache
from .weights import WeightsError, load_state_dict


class UpscaleModelError(ValueError):
    """A file in upscale_models that is not a Real-ESRGAN model VisionKit can run."""


@dataclass(frozen=True)
class UpscaleArch:
    arch: str  # "RRDBNet" | "SRVGGNetCompact"
    scale: int
    num_in_ch: int
    num_out_ch: int
    num_feat: int
    num_block: int  # RRDB blocks, or SRVGG conv layers
    num_grow_ch: int = 32
    act_type: str = "prelu"

    def describe(self) -> str:
        what = "blocks" if self.arch == "RRDBNet" else "convs"
        return f"{self.arch} x{self.scale}, {self.num_block} {what}, {self.num_feat} features"


def _body_indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def detect_arch(sd: dict, name: str = "file") -> UpscaleArch:
    """Infer the Real-ESRGAN architecture of a state-dict, or explain what the file is instead."""
    if "conv_first.weight" in sd and "conv_last.weight" in sd:
        w = sd["conv_first.weight"]
        num_feat, in_ch = int(w.shape[0]), int(w.shape[1])
        num_out_ch = int(sd["conv_last.weight"].shape[0])
        blocks = _body_indices(sd, r"body\.(\d+)\.rdb1\.")
        if not blocks:
            raise UpscaleModelError(f"{name} looks like an RRDB network but has no body.N.rdb1 blocks")
        grow = int(sd["body.0.rdb1.conv1.weight"].shape[0])
        # x4 reads RGB directly; x2 / x1 read pixel-unshuffled input (4x / 16x the channels)
        base_in = num_out_ch
        ratio = in_ch // base_in if base_in and in_ch % base_in == 0 else 0
        scale = {1: 4, 4: 2, 16: 1}.get(ratio)
        if scale is None:
            raise UpscaleModelError(f"{name}: RRDBNet with {in_ch} input channels for {num_out_ch} output "
                                    "channels is not a Real-ESRGAN layout (x4: equal, x2: 4x, x1: 16x)")
        if scale == 4 and "conv_up2.weight" not in sd:
            raise UpscaleModelError(f"{name}: RRDBNet without conv_up2 (an x2-only variant of another project); "
                                    "not supported")
        return UpscaleArch("RRDBNet", scale, base_in, num_out_ch, num_feat, len(blocks), grow)
    if "body.0.weight" in sd and not any(k.startswith("body.0.rdb") for k in sd):
        idx = _body_indices(sd, r"body\.(\d+)\.weight")
        last = idx[-1]
        first, out = sd["body.0.weight"], sd[f"body.{last}.weight"]
        if first.ndim == 4 and out.ndim == 4 and last % 2 == 0 and last >= 2:
            num_feat, in_ch = int(first.shape[0]), int(first.shape[1])
            num_conv = (last - 2) // 2
            act = "prelu" if "body.1.weight" in sd else "relu"
            up2 = int(out.shape[0]) // in_ch
            scale = int(round(up2 ** 0.5))
            if scale * scale * in_ch != int(out.shape[0]):
                raise UpscaleModelError(f"{name}: SRVGG-like net whose last conv has {out.shape[0]} channels, "
                                        "which is no square upscale of its input")
            return UpscaleArch("SRVGGNetCompact", scale, in_ch, in_ch, num_feat, num_conv, act_type=act)
    raise UpscaleModelError(describe_foreign(sd, name))


def describe_foreign(sd: dict, name: str) -> str:
    """Say what a non-Real-ESRGAN file probably is (people pick the wrong file all the time)."""
    keys = list(sd)
    guess = "an unknown model"
    if any(k.startswith("image_encoder.") for k in keys) and any(k.startswith("mask_decoder.") for k in keys):
        guess = "a SAM (segment-anything) checkpoint: choose it in 'VisionKit SAM Loader'"
    elif any("layers.0.residual_group" in k for k in keys) or any(k.startswith("layers.0.blocks") for k in keys):
        guess = "a SwinIR/Swin2SR model, which VisionKit does not run (ComfyUI's core upscale loader does)"
    elif any(k.startswith("model.0.") for k in keys) and any(".sub." in k for k in keys):
        guess = "an ESRGAN model in the old 'model.N' layout; re-save it with Real-ESRGAN key names"
    elif any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in keys):
        guess = "a Stable Diffusion checkpoint: choose it in 'VisionKit Pipeline Loader'"
    elif any("transformer.encoder" in k or "backbone" in k for k in keys):
        guess = "a detection model (Grounding DINO?): choose it in 'VisionKit Grounding DINO Loader'"
    return (f"{name} is not a Real-ESRGAN model (RRDBNet or SRVGGNetCompact); it looks like {guess}. "
            "Put a Real-ESRGAN file such as RealESRGAN_x4plus.pth in upscale_models.")


def build_network(arch: UpscaleArch):
    from .compat import import_basicsr_archs

    RRDBNet, SRVGGNetCompact = import_basicsr_archs()
    if arch.arch == "RRDBNet":
        return RRDBNet(num_in_ch=arch.num_in_ch, num_out_ch=arch.num_out_ch, scale=arch.scale,
                       num_feat=arch.num_feat, num_block=arch.num_block, num_grow_ch=arch.num_grow_ch)
    return SRVGGNetCompact(num_in_ch=arch.num_in_ch, num_out_ch=arch.num_out_ch, num_feat=arch.num_feat,
                           num_conv=arch.num_block, upscale=arch.scale, act_type=arch.act_type)


def _build(spec: ModelSpec, device) -> Loaded:
    import os

    import torch

    name = os.path.basename(spec.path)
    try:
        sd = load_state_dict(spec.path)
    except WeightsError as ex:
        raise UpscaleModelError(str(ex)) from None
    arch = detect_arch(sd, name)
    net = build_network(arch)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as ex:
        raise UpscaleModelError(f"{name}: weights do not fit the detected {arch.describe()} "
                                f"({str(ex).splitlines()[0][:200]})") from None
    net.eval().requires_grad_(False)
    dtype = torch.float16 if spec.dtype == "fp16" or (spec.dtype == "auto" and device.type == "cuda") \
        else torch.float32
    net.to(device=device, dtype=dtype)
    return Loaded(net, meta={"arch": arch.describe(), "scale": arch.scale})


def upscale_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind="upscale", path=path, build=_build, dtype=dtype)


def load_upscale_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    spec = upscale_spec(path, dtype)
    return spec, get_cache().load(spec)
