"""Fixture models large enough to measure memory with (hundreds of MB), written only by the tests that need them.

Not a `tiny_*` module on purpose: tiny_models.build_all discovers those and writes them for every session;
these are written on demand, into the folder a test chooses, and removed by that test.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import import_pack

import_pack()


def big_rrdbnet_state_dict(num_feat: int = 128, num_block: int = 32, scale: int = 4, seed: int = 0) -> dict:
    """A Real-ESRGAN RRDBNet state-dict (the real key names and shapes) of about 200 MB in fp32 with the default 32
    blocks (about 6 MB per block; spandrel, like every published file, has 32 growth channels).

    The keys come from spandrel's RRDBNet with one block, renamed to Real-ESRGAN's; the other blocks repeat block
    0's shapes. Small random values (the tests load it, they do not judge its pictures)."""
    from spandrel.architectures.ESRGAN import ESRGAN

    from .tiny_upscale import real_esrgan_keys

    shuffle = {4: None, 2: 2, 1: 4}[scale]
    template = real_esrgan_keys(ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=num_feat, num_blocks=1,
                                       scale=4, shuffle_factor=shuffle).state_dict())
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in template.items():
        names = [k.replace("body.0.", f"body.{i}.", 1) for i in range(num_block)] if k.startswith("body.0.") else [k]
        for name in names:
            out[name] = torch.empty(v.shape, dtype=torch.float32).normal_(0.0, 0.01, generator=g)
    return out


def write_big_upscale_model(path: Path, **kw) -> int:
    """Write the big RRDBNet as .safetensors; returns the number of parameter bytes."""
    from safetensors.torch import save_file

    sd = big_rrdbnet_state_dict(**kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return sum(t.numel() * t.element_size() for t in sd.values())
