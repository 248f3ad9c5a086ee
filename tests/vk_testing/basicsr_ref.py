"""basicsr / realesrgan, the test reference for Real-ESRGAN files (the pack itself runs spandrel).

basicsr (and so realesrgan) imports `torchvision.transforms.functional_tensor`, a module torchvision removed in
0.17. The pack used to register a stand-in for it process-wide; now only the tests import basicsr, so the
stand-in lives here, registered just before that import, in the test process only.
"""
from __future__ import annotations

import importlib
import sys
import types

_FT = "torchvision.transforms.functional_tensor"


def ensure_basicsr_importable() -> None:
    if _FT in sys.modules:
        return
    try:
        importlib.import_module(_FT)
        return  # an old torchvision that still has it
    except ImportError:
        pass
    from torchvision.transforms import functional as F

    shim = types.ModuleType(_FT)
    shim.rgb_to_grayscale = F.rgb_to_grayscale
    shim.__doc__ = "VisionKit test shim: torchvision removed this module; basicsr only needs rgb_to_grayscale."
    sys.modules[_FT] = shim


def import_basicsr_archs():
    """(RRDBNet, SRVGGNetCompact) classes of basicsr / realesrgan."""
    ensure_basicsr_importable()
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return RRDBNet, SRVGGNetCompact


def realesrganer():
    """The RealESRGANer class (Real-ESRGAN's own inference helper)."""
    ensure_basicsr_importable()
    from realesrgan import RealESRGANer

    return RealESRGANer


def basicsr_network(sd: dict):
    """The basicsr / realesrgan network for a Real-ESRGAN-layout state dict (for RealESRGANer's model=)."""
    RRDBNet, SRVGGNetCompact = import_basicsr_archs()
    if "conv_first.weight" in sd:
        feat, in_ch = sd["conv_first.weight"].shape[:2]
        out_ch = sd["conv_last.weight"].shape[0]
        scale = {1: 4, 4: 2, 16: 1}[in_ch // out_ch]
        blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
        grow = sd["body.0.rdb1.conv1.weight"].shape[0]
        return RRDBNet(num_in_ch=out_ch, num_out_ch=out_ch, scale=scale, num_feat=feat, num_block=blocks,
                       num_grow_ch=grow), scale
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    feat, in_ch = sd["body.0.weight"].shape[:2]
    scale = round((sd[f"body.{last}.weight"].shape[0] // in_ch) ** 0.5)
    act = "prelu" if "body.1.weight" in sd else "relu"
    net = SRVGGNetCompact(num_in_ch=in_ch, num_out_ch=in_ch, num_feat=feat, num_conv=(last - 2) // 2, upscale=scale,
                          act_type=act)
    return net, scale
