"""The values that travel between the generation nodes, and the names of their ComfyUI socket types.

- VK_PIPELINE (`PipelineHandle`): a small, hashable description. The heavy components are resolved
  through the shared cache (`with use_components(handle) as comps:`); LoRAs are a tuple of `LoraRef`
  (LoRA spec, unet strength, text strength) that the sampler / prompt encoder ask for; models/sd/lora_apply.py
  patches them into the cached UNet / text encoders in place once per stack and restores the originals exactly.
- VK_CONDITIONING (`Conditioning`): prompt embeddings computed by the prompt encoder, for the positive
  and the negative prompt, pooled embeddings and SDXL's size/crop conditioning.
- VK_CONTROL (`ControlChain`): an immutable tuple of `ControlEntry`. Every "…Apply" node takes an
  optional chain and returns a new one with its entry appended; the sampler applies every entry for
  the steps between its start and end percent. Kind "controlnet" is a ControlNet with a hint image;
  kinds "ipadapter" and "instantid" carry reference images / a face embedding and their settings in `extra`.
- VK_CONTROLNET_MODEL, VK_IPADAPTER, VK_INSTANTID: the loaders' handles (models/sd/controlnet.py,
  ip_adapter.py, instantid.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from ..core.cache import ModelSpec, get_cache
from ..core.errors import VisionKitError

# ComfyUI socket types of the generation nodes: declared here once, used by the nodes' RETURN_TYPES / INPUT_TYPES
PIPELINE_TYPE = "VK_PIPELINE"
CONDITIONING_TYPE = "VK_CONDITIONING"
CONTROL_TYPE = "VK_CONTROL"
CONTROLNET_TYPE = "VK_CONTROLNET_MODEL"
IPADAPTER_TYPE = "VK_IPADAPTER"
INSTANTID_TYPE = "VK_INSTANTID"

ARCH_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


class GenerationError(VisionKitError):
    """Wrong combination or input for generation; the message says what and how to fix it."""


def arch_mismatch(what: str, what_arch: str, pipeline_arch: str) -> GenerationError:
    return GenerationError(f"this {what} is {ARCH_NAMES.get(what_arch, what_arch)}, the pipeline is "
                           f"{ARCH_NAMES.get(pipeline_arch, pipeline_arch)}: pick a {what} made for "
                           f"{ARCH_NAMES.get(pipeline_arch, pipeline_arch)}, or load a "
                           f"{ARCH_NAMES.get(what_arch, what_arch)} pipeline")


@dataclass(frozen=True)
class LoraRef:
    spec: ModelSpec  # the LoRA file through the cache (its value: the parsed, normalised LoRA)
    arch: str
    strength_unet: float = 1.0
    strength_text: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class PipelineHandle:
    """VK_PIPELINE."""

    spec: ModelSpec  # checkpoint file or diffusers folder → Components through the cache
    arch: str  # "sd15" | "sdxl"
    inpaint: bool = False  # 9-channel UNet
    prediction: str = "epsilon"  # or "v_prediction"
    vae: ModelSpec | None = None  # optional VAE override
    loras: tuple = ()  # LoraRef, in the order the LoRA loaders were chained
    name: str = ""

    def with_lora(self, lora: LoraRef) -> "PipelineHandle":
        if lora.arch != self.arch:
            raise arch_mismatch("LoRA", lora.arch, self.arch)
        return replace(self, loras=self.loras + (lora,))


@dataclass
class Components:
    """What the cache holds for one pipeline file: the diffusers modules and their configs."""

    arch: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    text_encoder_2: Any = None  # SDXL
    tokenizer_2: Any = None  # SDXL
    scheduler_config: dict = field(default_factory=dict)
    inpaint: bool = False
    prediction: str = "epsilon"

    def vk_modules(self):
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]


@contextmanager
def use_components(handle: PipelineHandle) -> Iterator[Components]:
    """The pipeline's cached components, pinned (and on the device) for the `with` block."""
    with get_cache().use(handle.spec) as comps:
        yield comps


@dataclass(frozen=True)
class Conditioning:
    """VK_CONDITIONING: encoded positive and negative prompts for one pipeline architecture."""

    arch: str
    prompt_embeds: Any  # (1, tokens, dim) float tensor on CPU
    negative_prompt_embeds: Any
    pooled: Any = None  # SDXL (1, 1280)
    negative_pooled: Any = None
    add_time_ids: tuple = ()  # SDXL: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
    negative_add_time_ids: tuple = ()
    text: str = ""
    negative_text: str = ""


@dataclass(frozen=True)
class ControlEntry:
    kind: str  # "controlnet" | "ipadapter" | "instantid"
    model: Any  # the model handle (a ModelSpec, or a small dataclass of specs)
    arch: str
    image: Any = None  # hint IMAGE (ControlNet) or reference IMAGE(s)
    strength: float = 1.0
    start: float = 0.0  # fraction of the steps
    end: float = 1.0
    mask: Any = None  # optional attention / region MASK
    extra: tuple = ()  # kind-specific settings as (key, value) pairs

    def option(self, key: str, default=None):
        return dict(self.extra).get(key, default)


ControlChain = tuple  # of ControlEntry
KIND_NAMES = {"controlnet": "ControlNet", "ipadapter": "IP-Adapter", "instantid": "InstantID"}


def append_control(chain, entry: ControlEntry) -> tuple:
    chain = tuple(chain or ())
    if chain and chain[0].arch != entry.arch:
        raise arch_mismatch(KIND_NAMES.get(entry.kind, entry.kind), entry.arch, chain[0].arch)
    return chain + (entry,)


def check_chain_arch(chain, pipeline_arch: str) -> None:
    for e in chain or ():
        if e.arch != pipeline_arch:
            raise arch_mismatch(KIND_NAMES.get(e.kind, e.kind), e.arch, pipeline_arch)
