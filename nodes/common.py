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


# ---------------------------------------------------------------- the Apply nodes' step window and strengths
# ControlNet, IP-Adapter and InstantID each act on a window of the sampler's steps with one or two strengths. The
# widgets and the check the node runs come from the same limits, declared once per node (e.g. STRENGTH = (0, 10)).
def window_inputs(what: str, detail: str = "") -> dict:
    """The start_percent / end_percent widgets of an Apply node whose effect is `what`."""
    return {
        "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                          f"The fraction of the steps at which {what} starts acting{detail}."}),
        "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                        "The fraction of the steps at which it stops (a step i of n acts when start <= i/n < end)."}),
    }


def strength_input(default: float, limits: tuple[float, float], tooltip: str) -> tuple:
    """A strength / weight widget whose range is `limits` (the same limits check_window uses)."""
    return ("FLOAT", {"default": default, "min": limits[0], "max": limits[1], "step": 0.01, "tooltip": tooltip})


def check_window(what: str, start_percent, end_percent, **strengths) -> bool | str:
    """True, or the message for a step window that never acts or a strength outside its limits.

    `strengths`: name=(value, (low, high)). Checked when the node runs: the window is a joint check of two inputs,
    and ComfyUI would attach a VALIDATE_INPUTS message to both (see validate_model)."""
    if not 0.0 <= float(start_percent) < float(end_percent) <= 1.0:
        return (f"start_percent ({start_percent}) must be below end_percent ({end_percent}), both between 0 and 1; "
                f"otherwise {what} never acts: set start_percent below end_percent")
    for name, (value, (low, high)) in strengths.items():
        if not low <= float(value) <= high:  # NaN fails too (ComfyUI's min/max check lets NaN through)
            return f"{name} must be between {low:g} and {high:g}, not {value}"
    return True
