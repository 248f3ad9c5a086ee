"""Loading a transformers model folder offline, with errors that say what the folder is and what to do.

The engines whose models are plain transformers folders use it: pose (ViTPose), depth (Depth Anything, DPT),
captions (BLIP), image similarity (DINOv2) and image labels (ViT); Grounding DINO takes its dtype choice from
here. Each model is a folder as `save_pretrained` writes it (config.json + weights + preprocessor / tokenizer
files), the layout of its Hugging Face repository. Nothing here downloads: every `from_pretrained` gets
`local_files_only=True` and a folder path that the model-folder resolver (folders.resolve) produced, and a
folder of the wrong kind is explained before transformers is asked to build anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..core.cache import ModelSpec
from ..core.errors import VisionKitError, is_out_of_memory, reraise_oom

DTYPES = ("auto", "fp32", "fp16", "bf16")
WEIGHT_SUFFIXES = (".safetensors", ".bin")

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


# ---------------------------------------------------------------- the folder's files
def first_line(ex: BaseException) -> str:
    text = str(ex).strip().splitlines()
    return (text[0] if text else type(ex).__name__)[:300]


def _name(folder: str) -> str:
    return os.path.basename(folder.rstrip(os.sep))


def read_config(folder: str, error_cls, holds: str) -> dict:
    """config.json of a model folder as a dict; a clear `error_cls` when there is none or it is not JSON.

    `holds` completes the message: what such a folder holds, or what the loader needs."""
    name = _name(folder)
    path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        raise error_cls(f"{name} is a file, not a model folder: {holds}")
    if not os.path.isfile(path):
        raise error_cls(f"{name} has no config.json: {holds}")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as ex:
        raise error_cls(f"{name}: cannot read its config.json ({first_line(ex)}); download the folder again") from ex
    if not isinstance(cfg, dict):
        raise error_cls(f"{name}: its config.json is not a JSON object; download the folder again")
    return cfg


def read_model_config(folder: str, accepted: tuple[str, ...], what: str, needs: str) -> dict:
    """config.json of a folder whose model_type is one of `accepted`, with weights beside it, else a clear error.

    `what` names the expected kind ("a BLIP captioning folder"), `needs` the files such a folder holds.
    """
    cfg = read_config(folder, VisionModelError, f"{what} holds {needs}, as its Hugging Face repository has "
                                                 "them: put the whole folder into the model folder")
    mt = cfg.get("model_type")
    if mt not in accepted:
        other = OTHER_KINDS.get(mt, f"a {mt!r} model")
        raise VisionModelError(f"{_name(folder)} is not {what}: its config.json says model_type {mt!r}, {other}")
    check_weights(folder, VisionModelError)
    return cfg


def check_weights(folder: str, error_cls) -> None:
    if not any(f.endswith(WEIGHT_SUFFIXES) and not f.startswith(".") for f in os.listdir(folder)):
        raise error_cls(f"{_name(folder)}: the folder has config.json but no weights (model.safetensors or "
                        "pytorch_model.bin); download them into it (or download the folder again)")


def require_files(folder: str, groups: list[tuple[str, ...]], what: str) -> None:
    """Each group is a set of alternatives of which one must be in the folder (tokenizer, processor files)."""
    for alts in groups:
        if not any(os.path.isfile(os.path.join(folder, f)) for f in alts):
            raise VisionModelError(f"{what} {folder} lacks {' or '.join(alts)}; copy it from the model's repository "
                                   "(the README's Models table names it)")


# ---------------------------------------------------------------- transformers, offline
def from_pretrained(cls, folder: str, error_cls, what: str = "it", *, check_fit: bool = False, **kwargs):
    """cls.from_pretrained(folder) offline; library errors become one clear line naming the folder.

    check_fit (models): weights that do not fit the config are an error, not randomly initialised layers.
    """
    name = _name(folder)
    try:
        if check_fit:
            model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kwargs)
        else:
            model, info = cls.from_pretrained(folder, local_files_only=True, **kwargs), {}
    except Exception as ex:  # noqa: BLE001 - transformers raises many kinds for a damaged or partial folder
        if is_out_of_memory(ex):
            reraise_oom(ex, f"VisionKit: not enough memory to load {name}; free memory or use a smaller dtype")
        raise error_cls(f"{name}: transformers could not load {what} ({first_line(ex)}); the download may be "
                        "incomplete: download the folder again") from ex
    missing = [k for k in info.get("missing_keys", []) if not str(k).endswith(("position_ids", "num_batches_tracked"))]
    mism = info.get("mismatched_keys", [])
    if missing or mism:
        show = ", ".join(str(m[0] if isinstance(m, tuple) else m) for m in (list(missing) + list(mism))[:4])
        raise error_cls(f"{name}: its weights do not fit its config.json ({len(missing)} missing, {len(mism)} of "
                        f"another shape, e.g. {show}); download the folder again")
    return model


def processor(cls, folder: str, error_cls):
    """The folder's image processor (preprocessor_config.json), or `cls()`'s defaults when it has none."""
    if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        return cls()
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    except Exception as ex:  # noqa: BLE001 - as from_pretrained
        raise error_cls(f"{_name(folder)}: cannot read its preprocessor_config.json ({first_line(ex)}); download "
                        "the folder again") from ex


# ---------------------------------------------------------------- dtype and device
def check_dtype(dtype: str, error_cls=VisionModelError) -> None:
    if dtype not in DTYPES:
        raise error_cls(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def torch_dtype(spec_dtype: str, device):
    import torch

    from ..core import host

    if spec_dtype == "auto":
        return host.default_dtype(device)
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec_dtype]


def finish(model, spec: ModelSpec, device) -> str:
    """Eval mode, no grads, on the device in the spec's dtype; returns the dtype's name."""
    dtype = torch_dtype(spec.dtype, device)
    model.eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------- inputs
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
