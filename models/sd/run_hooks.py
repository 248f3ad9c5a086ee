"""The sampler's extension point: what a VK_CONTROL kind does during one sampling run.

The sampler (models/sd/sampler.py) groups the chain's entries by kind and builds one `RunHook` per kind from its
table (ControlNet: models/sd/controlnet.py, IP-Adapter: models/sd/ip_adapter_run.py, InstantID:
models/sd/instantid_run.py). A hook may pin models and patch the UNet in `enter(run, patches, stack)` (e.g.
IP-Adapter's attention processors via `patches.set_attr` / `patches.add`) and add keyword arguments to every UNet
call in `unet_kwargs(step)` (ControlNet residuals, `added_cond_kwargs` such as image_embeds,
`cross_attention_kwargs`); `merge_unet_kwargs` combines what several hooks add.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.patching import RunPatches
from .sampler_settings import SamplerSettings
from .types import GenerationError, PipelineHandle


@dataclass
class Run:
    """The state of one sampling run (what hooks may read)."""

    comps: Any
    handle: PipelineHandle
    settings: SamplerSettings
    device: Any
    dtype: Any
    batch: int
    cfg: bool
    generator: torch.Generator
    scheduler: Any = None
    vae: Any = None  # the VAE this run encodes/decodes with (an fp32 copy for SDXL force_upcast)
    denoise: float = 1.0  # the strength in effect (1 for text-to-image)
    extras: dict = field(default_factory=dict)  # free space for hooks


@dataclass
class StepInputs:
    """What a hook sees of one UNet call (after scale_model_input; [negative, positive] halves under CFG)."""

    latent_model_input: torch.Tensor  # the latent channels only (an inpainting UNet's mask channels excluded)
    timestep: Any
    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict | None
    step_index: int
    total_steps: int


class RunHook:
    """Per-run behaviour of the VK_CONTROL entries of one kind (see the module docstring)."""

    def __init__(self, entries):
        self.entries = list(entries)

    def enter(self, run: Run, patches: RunPatches, stack: ExitStack) -> None:
        """Set up for the run: pin models (stack.enter_context), patch the UNet through `patches`."""

    def unet_kwargs(self, step: StepInputs) -> dict:
        return {}


def merge_unet_kwargs(into: dict, extra: dict) -> None:
    """Add one hook's UNet keyword arguments to `into`: residuals are summed, dicts joined, anything else once."""
    for k, v in extra.items():
        if v is None:
            continue
        old = into.get(k)
        if old is None:
            into[k] = v
        elif k == "down_block_additional_residuals":
            into[k] = [a + b for a, b in zip(old, v)]
        elif k == "mid_block_additional_residual":
            into[k] = old + v
        elif isinstance(old, dict) and isinstance(v, dict):
            into[k] = {**old, **v}
        else:
            raise GenerationError(f"two kinds of control-chain entries both set the UNet's {k}; they cannot be "
                                  "combined")
