"""Upscaling: every model spandrel's core architectures load (upscale_arch.py), run by VisionKit's tile
engine (upscale_tiles.py). This module is the one the nodes and other capabilities import."""
from __future__ import annotations

from ..core.weights import load_state_dict  # noqa: F401
from .arch import (  # noqa: F401 - the public surface
    DTYPES,
    LICENCES,
    UpscaleModel,
    UpscaleModelError,
    build_model,
    core_architectures,
    describe_foreign,
    detect_support,
    load_upscale_model,
    pick_dtype,
    upscale_spec,
)
from .tiles import (  # noqa: F401
    ALPHA_MODES,
    DEFAULT_TILE,
    DEFAULT_TILE_PAD,
    MAX_TILE_BATCH,
    MIN_TILE,
    AxisPlan,
    UpscaleInputError,
    available_bytes,
    check_memory,
    input_multiple,
    network_scale,
    output_size,
    plan_axis,
    tile_bytes,
    upscale_image,
    upscale_tensor,
)
