"""The sampler's settings and their limits, checked in words (the LCM Sampler node's VALIDATE_INPUTS uses them too)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .schedulers import SCHEDULER_NAMES

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
MAX_STEPS = 100
MIN_SIZE = 16  # ComfyUI's Empty Latent Image minimum
MAX_SIZE = 16384
MAX_BATCH = 64


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 4
    guidance: float = 1.0
    seed: int = 0
    scheduler: str = "lcm"
    denoise: float = 1.0  # image-to-image / inpainting only
    width: int = 512  # text-to-image only (an IMAGE sets the size)
    height: int = 512
    batch_size: int = 1


def _number(name, value, lo, hi, whole=True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number, not {value!r}"
    if not math.isfinite(v):
        return f"{name} must be a finite number, not {value!r}"
    if whole and not v.is_integer():
        return f"{name} must be a whole number, not {value!r}"
    if whole:
        v = value if isinstance(value, int) else int(v)  # exact for seeds up to 2^64-1
    if not lo <= v <= hi:
        return f"{name} {value} is outside {lo}..{hi}: set it within that range"
    return None


def check_settings(steps=None, guidance=None, seed=None, scheduler=None, denoise=None, width=None, height=None,
                   batch_size=None) -> str | None:
    """The first problem with these settings, in words (None = fine). Unset (None) values are not checked."""
    if width is not None or height is not None:
        for name, v in (("width", width), ("height", height)):
            if v is None:
                continue
            msg = _number(name, v, MIN_SIZE, MAX_SIZE)
            if msg:
                return msg + " pixels"
            if int(v) % 8:
                lo = int(v) // 8 * 8
                return (f"{name} {v} is not a multiple of 8 (Stable Diffusion works on 8×8-pixel latents): use "
                        f"{max(lo, MIN_SIZE)} or {lo + 8}")
    checks = ((steps, lambda: _number("steps", steps, 1, MAX_STEPS)),
              (guidance, lambda: _number("guidance", guidance, 0.0, 100.0, whole=False)),
              (seed, lambda: _number("seed", seed, 0, MAX_SEED)),
              (batch_size, lambda: _number("batch_size", batch_size, 1, MAX_BATCH)),
              (denoise, lambda: _number("denoise", denoise, 0.0, 1.0, whole=False)))
    for value, check in checks:
        msg = check() if value is not None else None
        if msg:
            if value is denoise:
                msg += " (0 keeps the image, 1 repaints it completely)"
            return msg
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        return f"scheduler {scheduler!r} is not one of: {', '.join(SCHEDULER_NAMES)}"
    return None
