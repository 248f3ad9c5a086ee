"""Small helpers shared by the node classes (kept thin: the work is in models/)."""
from __future__ import annotations

import json
import os

from ..models.core import folders

CATEGORY = "VisionKit"


class AnyType(str):
    """A socket type that accepts any connection (ComfyUI compares types with `!=`)."""

    def __ne__(self, other):  # noqa: D401 - see ComfyUI comfy_execution/validation.py
        return False

    def __hash__(self):
        return hash(str(self))


ANY = AnyType("*")


def model_combo(key: str, tooltip: str) -> tuple:
    """A dropdown of the models in folder `key`; the tooltip says where files go."""
    s = folders.spec(key)
    where = ", ".join(folders.folder_paths_for(key)[:1]) or f"models/{s.folder}"
    # vk_folder: which folder the list comes from (GET /visionkit/loaders; the canvas says where files go)
    return (folders.list_models(key), {"tooltip": f"{tooltip} Files in {where} ({s.holds}).", "vk_folder": key})


# VALIDATE_INPUTS in this pack names at most ONE input. ComfyUI's /prompt calls it with the inputs its signature
# names, attaches a returned message to every one of them (one "custom_validation_failed" entry per input, so
# the same message shows N times), and skips its own min/max and list checks for them. So ranges are left to
# ComfyUI (INPUT_TYPES min/max), VALIDATE_INPUTS keeps the one check ComfyUI cannot do that matters most up
# front (a model name, a prompt's text, SAM's points ...), and joint checks of several inputs (start_percent
# < end_percent ...) run when the node runs. tests/test_validate_inputs.py holds every node to it.


def validate_model(key: str, name: str):
    """VALIDATE_INPUTS answer for a model name: True or the message that /prompt returns."""
    try:
        folders.resolve(key, name)
    except (folders.ModelNotFoundError, folders.UnsafeModelNameError) as ex:
        return str(ex)
    return True


def file_fingerprint(key: str, name: str) -> str:
    """IS_CHANGED for loaders: changes when the file (or folder) changes on disk."""
    try:
        from ..models.core.cache import file_identity

        size, mtime = file_identity(folders.resolve(key, name))
        return f"{size}:{mtime}"
    except Exception:
        return "missing"


def to_json(value) -> str:
    return json.dumps(value, indent=1, sort_keys=False, default=str)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def short_path(p: str) -> str:
    return os.path.basename(p.rstrip(os.sep))
