"""Upscale models through spandrel: architecture detection, loading, dtype choice, the shared cache.

ComfyUI core loads upscale models with spandrel (already in every ComfyUI install), so VisionKit does too: the
files people keep in upscale_models (Real-ESRGAN, old-layout ESRGAN such as 4x-UltraSharp, SwinIR, HAT, DAT,
OmniSR, SPAN, Real-ESRGAN compact …) all load here. Spandrel never opens a file itself: the pack's own safe
loader (weights.py: safetensors or weights-only torch.load) reads the state dict, spandrel only detects and
builds the network from it.

Licences: spandrel's core package only holds architectures under permissive licences (MIT, Apache-2.0, BSD,
CC0; AuraSR is CC-BY-SA-4.0, which allows commercial use). The non-commercial ones live in the separate
`spandrel_extra_arches` package; ComfyUI adds them to spandrel's global registry when they are installed, so
VisionKit detects with the core architectures only and names an extra one instead of running it.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from ..core import identify
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.errors import VisionKitError
from ..core.weights import WeightsError, load_state_dict

UPSCALE_MODEL_TYPE = "VK_UPSCALE_MODEL"  # the ComfyUI socket type of a loaded upscale model

log = logging.getLogger("visionkit")

DTYPES = ("auto", "fp32", "fp16", "bf16")

# spandrel architecture id -> licence of its code (from each architecture's __arch/LICENSE in spandrel 0.4.2).
# Listed here so the README and the loader's messages can say it; every core licence allows commercial use.
LICENCES = {
    "ESRGAN": "Apache-2.0", "Compact": "BSD-3-Clause", "SwinIR": "Apache-2.0",
    "Swin2SR": "Apache-2.0", "HAT": "MIT", "DAT": "Apache-2.0", "OmniSR": "Apache-2.0", "SPAN": "Apache-2.0",
    "RGT": "Apache-2.0", "ATD": "Apache-2.0", "DRCT": "MIT", "CRAFT": "Apache-2.0", "SAFMN": "Apache-2.0",
    "PLKSR": "MIT", "RealCUGAN": "MIT", "DITN": "Apache-2.0", "DCTLSA": "Apache-2.0", "GRL": "MIT",
    "SwiftSRGAN": "CC0-1.0", "MMRealSR": "BSD-3-Clause", "SeemoRe": "Apache-2.0", "MoSR": "MIT", "MoESR": "MIT",
    "RCAN": "MIT", "FDAT": "MIT", "AuraSR": "CC-BY-SA-4.0 (share-alike)", "SCUNet": "Apache-2.0",
    "NAFNet": "MIT", "FBCNN": "Apache-2.0", "DnCNN": "MIT", "DRUNet": "MIT", "KBNet": "MIT", "Uformer": "MIT",
    "FFTformer": "MIT", "IPT": "Apache-2.0", "MixDehazeNet": "MIT", "RetinexFormer": "MIT", "HVICIDNet": "MIT",
}


class UpscaleModelError(VisionKitError):
    """A file in upscale_models that VisionKit cannot run as an upscale model; the message says why."""


@dataclass
class UpscaleModel:
    """A loaded upscale network and what the tile engine needs to know about it (the cached value)."""

    descriptor: object  # spandrel.ImageModelDescriptor
    arch: str  # spandrel's architecture id ("ESRGAN", "SwinIR", "Compact" …)
    scale: int
    multiple: int = 1  # input height and width must divide by this (windows start and end on it)
    minimum: int = 0  # smallest input side
    square: bool = False  # the input must be square
    tiling: str = "supported"  # spandrel's ModelTiling: supported | discouraged | internal
    details: str = ""

    @property
    def module(self):
        return self.descriptor.model

    def vk_modules(self):  # the cache moves / measures these
        return [self.descriptor.model]

    def parameters(self):
        return self.descriptor.model.parameters()

    def __call__(self, x):
        """spandrel's own call: the model's forward, clamped to 0..1 (the engine's windows meet the size rules,
        so it pads nothing) - except Real-ESRGAN x2 / x1 windows, multiples of the unshuffle factor where
        spandrel asks 4: its padding would change them, so they go straight to the network (which needs no
        more), as RealESRGANer runs them."""
        import torch

        desc = self.descriptor
        if desc.size_requirements.check(int(x.shape[-1]), int(x.shape[-2])):
            return desc(x)
        with torch.inference_mode():
            return desc.model(x).clamp_(0, 1)

    def describe(self) -> str:
        return f"{display_name(self.arch, self.details)} x{self.scale}" + (f", {self.details}" if self.details else "")


def display_name(arch: str, details: str = "") -> str:
    return "RRDBNet" if arch == "ESRGAN" else arch


def _spandrel():
    try:
        import spandrel
    except ImportError as ex:
        raise UpscaleModelError("the 'spandrel' package is missing (ComfyUI installs it with its requirements); "
                                "install it into ComfyUI's Python: pip install spandrel") from ex
    return spandrel


def core_architectures() -> list:
    """spandrel's core ArchSupports in detection order (extras added to the global registry left out)."""
    spandrel = _spandrel()
    return [a for a in spandrel.MAIN_REGISTRY.architectures("detection") if _is_core(a)]


def _is_core(support) -> bool:
    return type(support.architecture).__module__.startswith("spandrel.architectures.")


def detect_support(sd: dict):
    """The spandrel ArchSupport whose detector accepts this state dict (core or extra), or None."""
    spandrel = _spandrel()
    sd = spandrel.canonicalize_state_dict(sd)
    for a in spandrel.MAIN_REGISTRY.architectures("detection"):
        try:
            if a.detect(sd):
                return a
        except Exception:  # noqa: BLE001 - a detector that trips over a foreign file just does not match
            continue
    return None


def build_model(sd: dict, name: str = "file") -> UpscaleModel:
    """Detect the architecture of a state dict and build its network on CPU in fp32 (or explain what it is)."""
    spandrel = _spandrel()
    sd = spandrel.canonicalize_state_dict(sd)
    support = detect_support(sd)
    if support is None:
        raise UpscaleModelError(describe_foreign(sd, name))
    arch_id = str(support.architecture.id)
    if not _is_core(support):
        raise UpscaleModelError(
            f"{name} is a {support.architecture.name} model, an architecture of spandrel_extra_arches, whose "
            "licence does not allow use in a pack that may be used commercially; VisionKit leaves it out. Run it "
            "with ComfyUI's core 'Load Upscale Model', or pick another model in upscale_models.")
    try:
        desc = support.architecture.load(sd)
    except Exception as ex:  # noqa: BLE001 - spandrel raises anything from KeyError to shape RuntimeErrors
        first = (str(ex).strip().splitlines() or [type(ex).__name__])[0][:200]
        raise UpscaleModelError(f"{name} looks like a {support.architecture.name} model but its weights do not fit "
                                f"that architecture ({type(ex).__name__}: {first}); the file may be damaged or a "
                                "variant spandrel does not know") from ex
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(f"{name} is a {support.architecture.name} model ({desc.purpose.lower()}: it needs a "
                                "mask as well as the image), not an upscaler; it does not go in upscale_models")
    if desc.purpose == "FaceSR":
        raise UpscaleModelError(f"{name} is a {support.architecture.name} face-restoration model: it works on aligned "
                                "512x512 face crops, not whole images, so it is no upscaler; use a face-restore "
                                "node for it")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise UpscaleModelError(f"{name}: a {support.architecture.name} model with {desc.input_channels} input and "
                                f"{desc.output_channels} output channels; VisionKit Upscale runs RGB models "
                                "(3 in, 3 out)")
    req = desc.size_requirements
    multiple = int(req.multiple_of)
    if arch_id == "ESRGAN" and getattr(desc.model, "shuffle_factor", None):
        # Real-ESRGAN x2 / x1 pixel-unshuffle their input and pad it to that factor themselves (as
        # RealESRGANer does); spandrel asks for 4 for both, which would pad odd sizes differently
        multiple = int(desc.model.shuffle_factor)
    multiple = math.lcm(multiple, attention_window(desc.model))
    desc.model.eval().requires_grad_(False)
    return UpscaleModel(desc, arch_id, int(desc.scale), multiple, int(req.minimum), bool(req.square),
                        desc.tiling.name.lower(), _details(arch_id, desc.tags))


def attention_window(module) -> int:
    """The attention window of a window-attention network (SwinIR, Swin2SR, HAT, DRCT, ATD, OmniSR …: their
    `window_size`), 1 for others. Such networks pad their input to a multiple of it and attend within windows
    laid from the top-left corner: a tile that starts on a multiple of it sees the same windows as the whole
    image, one that does not sees other groupings of pixels everywhere (measured on a tiny SwinIR: 98 levels
    off at tile_pad 16, 0 when aligned). spandrel's size rules say only `minimum` for most of them."""
    sizes = []
    for attr in ("window_size", "split_size"):
        v = getattr(module, attr, None)
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, int) and 1 <= x <= 64:
                sizes.append(x)
    return math.lcm(*sizes) if sizes else 1


def _details(arch: str, tags) -> str:
    words = []
    for t in tags:
        if arch == "ESRGAN" and t.endswith("nb") and t[:-2].isdigit():
            words.append(f"{t[:-2]} blocks")
        elif arch == "ESRGAN" and t.endswith("nf") and t[:-2].isdigit():
            words.append(f"{t[:-2]} features")
        else:
            words.append(str(t))
    if arch == "ESRGAN":  # "2 blocks, 8 features" first, as Real-ESRGAN users know them
        words.sort(key=lambda w: (not w.endswith("blocks"), not w.endswith("features")))
    return ", ".join(words)


def describe_foreign(sd: dict, name: str) -> str:
    """Say what a file that no upscale architecture accepts probably is (people pick the wrong file)."""
    return (f"{name} is not an upscale model spandrel knows (ESRGAN / Real-ESRGAN, SwinIR, HAT, DAT, SPAN, "
            f"compact …); it looks like {identify.what_is(sd, exclude=('upscaler',))}. Put upscale models such as "
            "RealESRGAN_x4plus.pth or 4x-UltraSharp.pth in upscale_models.")


def describe_upscaler(sd: dict) -> str | None:
    """Plain words for an upscale model's state dict ("a Real-ESRGAN upscaler (RRDBNet x4, 23 blocks, 64
    features)"), or None when no spandrel architecture accepts it (for identify.what_is)."""
    spandrel = _spandrel()
    sd = spandrel.canonicalize_state_dict(sd)
    support = detect_support(sd)
    if support is None:
        return None
    if not _is_core(support):
        return (f"a {support.architecture.name} model (spandrel_extra_arches, non-commercial licence), which "
                "VisionKit leaves out")
    try:
        model = build_model(sd)
    except UpscaleModelError:
        return None  # detected but not an upscaler VisionKit runs (face restoration, inpainting …)
    real = model.arch == "Compact" or ("conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd)
    label = "a Real-ESRGAN upscaler" if real else "an upscale model"
    return f"{label} ({model.describe()})"


def pick_dtype(choice: str, device, model: UpscaleModel):
    """The dtype to run in: auto = fp16 on CUDA (bf16, then fp32, where the architecture cannot run fp16),
    fp32 elsewhere. A half dtype the architecture does not support falls back to fp32 (logged)."""
    import torch

    desc = model.descriptor
    cuda = getattr(device, "type", str(device)) == "cuda"
    if choice not in DTYPES:
        raise UpscaleModelError(f"dtype {choice!r} is not one of {', '.join(DTYPES)}")
    if choice == "auto":
        if not cuda:
            return torch.float32
        if desc.supports_half:
            return torch.float16
        if desc.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    want = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]
    ok = {torch.float32: True, torch.float16: desc.supports_half, torch.bfloat16: desc.supports_bfloat16}[want]
    if not ok:
        log.warning("VisionKit: %s cannot run in %s (spandrel says so); using fp32", model.arch, choice)
        return torch.float32
    return want


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path)
    try:
        sd = load_state_dict(spec.path)
    except WeightsError as ex:
        raise UpscaleModelError(str(ex)) from ex
    model = build_model(sd, name)
    del sd
    dtype = pick_dtype(spec.dtype, device, model)
    model.descriptor.to(device=device, dtype=dtype)
    return Loaded(model, meta={"arch": model.describe(), "scale": model.scale,
                               "licence": LICENCES.get(model.arch, "see spandrel")})


def upscale_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind="upscale", path=path, build=_build, dtype=dtype)


def load_upscale_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    if dtype not in DTYPES:
        raise UpscaleModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = upscale_spec(path, dtype)
    return spec, get_cache().load(spec)


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    """Every layout spandrel's core detectors know (ESRGAN in every layout, SwinIR, HAT, DAT, compact …)."""
    try:
        what = describe_upscaler(sd)
    except Exception:  # noqa: BLE001 - spandrel missing, or a layout it trips over: an identifier never fails
        return None
    if what is None:
        return None
    return what if "leaves it out" in what else f"{what}: {identify.goes('upscaler')}"


identify.register("upscaler", _what_file, order=80,
                  place=identify.Place("upscale_models", "VisionKitUpscaleModelLoader"))
