"""Fixes for library breakage, each done once, here, with a test in tests/test_compat.py.

basicsr (and so realesrgan) imports `torchvision.transforms.functional_tensor`, a module torchvision
removed in 0.17. Peer packs break exactly here ("No module named
'torchvision.transforms.functional_tensor'"). Before the first basicsr import we register a small module
under that name whose `rgb_to_grayscale` is torchvision's current one; nothing else of it is used.
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
    shim.__doc__ = "VisionKit shim: torchvision removed this module; basicsr only needs rgb_to_grayscale."
    sys.modules[_FT] = shim


def import_basicsr_archs():
    """(RRDBNet, SRVGGNetCompact) classes, with the import fix applied."""
    ensure_basicsr_importable()
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return RRDBNet, SRVGGNetCompact
