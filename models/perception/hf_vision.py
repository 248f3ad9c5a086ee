"""Shared loading for the transformers image models (BLIP captions, DINOv2 similarity, ViT labels).

Each of them is a folder as `save_pretrained` writes it (config.json + weights + preprocessor /
tokenizer files), the layout of its Hugging Face repository. Loading is offline (`local_files_only`),
through the shared cache, and a folder of the wrong kind (a DINOv2 folder picked in the caption loader,
a CLIP folder, a bare weights file) is explained before transformers is asked to build anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..core.cache import ModelSpec
from ..core.errors import VisionKitError

DTYPES = ("auto", "fp32", "fp16", "bf16")

# model_type → what it is and where it belongs, for "this is not a ... folder" messages
OTHER_KINDS = {
    "blip": "a BLIP captioning model: load it with 'VisionKit Load Caption Model (BLIP)' (folder blip)",
    "dinov2": "a DINOv2 model: load it with 'VisionKit Load Image Similarity Model (DINOv2)' (folder dinov2)",
    "dinov2_with_registers": "a DINOv2 model: load it with 'VisionKit Load Image Similarity Model (DINOv2)'",
    "vit": "a ViT model: load it with 'VisionKit Load Image Labels Model (ViT)' (folder vit)",
    "clip": "a CLIP model: load it with 'VisionKit Load CLIP Model' (folder clip_models)",
    "grounding-dino": "a Grounding DINO model: load it with 'VisionKit Load Grounding DINO Model'",
    "sam": "a transformers SAM model; VisionKit's SAM nodes read segment-anything checkpoints (folder sams)",
}


class VisionModelError(VisionKitError):
    """A model folder that cannot be used; the message says what it is and what to do."""


@dataclass
class VisionBundle:
    """What the cache holds for one model folder: the network and its processor (never changed by a run)."""

    model: object
    processor: object
    info: dict = field(default_factory=dict)

    def vk_modules(self):
        return [self.model]

    def device_dtype(self):
        p = next(self.model.parameters())
        return p.device, p.dtype


def read_config(path: str, accepted: tuple[str, ...], what: str, needs: str) -> dict:
    """config.json of a model folder whose model_type is one of `accepted`, else a clear error.

    `what` names the expected kind ("a BLIP captioning folder"), `needs` the files such a folder holds.
    """
    name = os.path.basename(path.rstrip(os.sep))
    if not os.path.isdir(path):
        raise VisionModelError(f"{name} is a file; {what} is a folder as its Hugging Face repository has it "
                               f"({needs}): put the whole folder into the model folder")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise VisionModelError(f"{path} has no config.json; {what} holds {needs}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as ex:
        raise VisionModelError(f"cannot read {cfg_path} ({ex}); download the folder again") from ex
    mt = cfg.get("model_type") if isinstance(cfg, dict) else None
    if mt not in accepted:
        other = OTHER_KINDS.get(mt, f"a {mt!r} model")
        raise VisionModelError(f"{name} is not {what}: its config.json says model_type {mt!r}, {other}")
    if not any(f.endswith((".safetensors", ".bin")) for f in os.listdir(path)):
        raise VisionModelError(f"{path} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
                               "download the folder again")
    return cfg


def require_files(path: str, groups: list[tuple[str, ...]], what: str) -> None:
    """Each group is a set of alternatives of which one must be in the folder (tokenizer, processor files)."""
    for alts in groups:
        if not any(os.path.isfile(os.path.join(path, f)) for f in alts):
            raise VisionModelError(f"{what} {path} lacks {' or '.join(alts)}; copy it from the model's repository "
                                   "(the README's Models table names it)")


def from_pretrained(cls, path: str, what: str, **kwargs):
    """cls.from_pretrained(path) offline; library errors become one clear line naming the folder."""
    try:
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as ex:
        first = str(ex).strip().splitlines()[0][:300] if str(ex).strip() else type(ex).__name__
        raise VisionModelError(f"cannot load {what} from {path}: {first}; download the folder again or check "
                               "that it is complete") from ex


def torch_dtype(spec_dtype: str, device):
    import torch

    from ..core import host

    if spec_dtype == "auto":
        return host.default_dtype(device)
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec_dtype]


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise VisionModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def finish(model, spec: ModelSpec, device) -> str:
    """Eval mode, no grads, on the device in the spec's dtype; returns the dtype's name."""
    dtype = torch_dtype(spec.dtype, device)
    model.eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    return str(dtype).replace("torch.", "")


def pil_images(image) -> list:
    """An IMAGE batch as PIL RGB images (uint8, rounded: what a processor gets from a loaded file)."""
    from PIL import Image

    from ..core.imageops import check_image, to_uint8

    image = check_image(image)
    return [Image.fromarray(to_uint8(image[i, ..., :3])) for i in range(image.shape[0])]


def move_inputs(inputs, device, dtype) -> dict:
    """Processor outputs on the model's device; floating tensors (pixels) in its dtype."""
    out = {}
    for k, v in dict(inputs).items():
        if hasattr(v, "to"):
            v = v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        out[k] = v
    return out
