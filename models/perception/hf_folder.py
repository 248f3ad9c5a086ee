"""Loading a transformers model folder offline, with errors that say what the folder is and what to do.

Shared by the engines whose models are plain transformers folders (pose: ViTPose, depth: Depth Anything / DPT).
Nothing here downloads: every `from_pretrained` gets `local_files_only=True` and a folder path that the
model-folder resolver (folders.resolve) produced.
"""
from __future__ import annotations

import json
import os

# One dtype table and dtype choice for every transformers-folder engine (also captions, similarity, labels).
from .hf_vision import DTYPES, torch_dtype  # noqa: F401  (used by pose, depth and their nodes)

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def first_line(ex: BaseException) -> str:
    text = str(ex).strip().splitlines()
    return (text[0] if text else type(ex).__name__)[:300]


def read_config(folder: str, error_cls, holds: str) -> dict:
    """config.json of a model folder as a dict; a clear `error_cls` when there is none or it is not JSON."""
    name = os.path.basename(folder.rstrip(os.sep))
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


def check_weights(folder: str, error_cls) -> None:
    name = os.path.basename(folder.rstrip(os.sep))
    if not any(f.endswith(WEIGHT_SUFFIXES) and not f.startswith(".") for f in os.listdir(folder)):
        raise error_cls(f"{name}: the folder has config.json but no weights (model.safetensors or pytorch_model.bin); "
                        "download them into it")


def from_pretrained(cls, folder: str, error_cls, **kwargs):
    """cls.from_pretrained(folder) offline; weights that do not fit the config are an error, not random layers."""
    name = os.path.basename(folder.rstrip(os.sep))
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kwargs)
    except Exception as ex:
        raise error_cls(f"{name}: transformers could not load it ({first_line(ex)}); the download may be incomplete: "
                        "download the folder again") from ex
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
    except Exception as ex:
        name = os.path.basename(folder.rstrip(os.sep))
        raise error_cls(f"{name}: cannot read its preprocessor_config.json ({first_line(ex)}); download the folder "
                        "again") from ex
