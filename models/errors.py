"""Short, stable names for the pack's exception types, as ComfyUI shows them.

When a node fails, ComfyUI reports `exception_type` as the class's `__module__ + "." + __qualname__`
(execution.py, `full_type_name`, in 0.3.64 and 0.33 alike). Inside ComfyUI the pack's modules are named
after the folder the user cloned it into, so users saw a path such as
`…/custom_nodes/ComfyUI-VisionKit.models.upscale.UpscaleModelError` in front of the message. Renaming the
module of every exception class the pack defines to "visionkit" makes that `visionkit.UpscaleModelError`,
whatever the folder is called. The message itself (first line: what is wrong and what to do) is unchanged.

`shorten_error_names(package)` runs once at pack import; it also imports the few engine modules that
define an exception but are loaded only when a model is (cheap: torch and numpy only), so every class a
node can raise is renamed before the first run.
"""
from __future__ import annotations

import importlib
import sys

SHORT_MODULE = "visionkit"
# Modules that define exceptions nodes can raise but are not imported when the pack is.
LAZY_ERROR_MODULES = ("models.face_keypoints", "models.ip_attention")


def is_pack_exception(obj, module_name: str) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module_name


def shorten_error_names(package: str) -> list[type]:
    """Set __module__ = "visionkit" on every exception class defined in a loaded module of `package`."""
    for name in LAZY_ERROR_MODULES:
        try:
            importlib.import_module(f"{package}.{name}")
        except ImportError:  # an optional engine whose library is missing: its errors cannot be raised
            pass
    renamed = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == package or mod_name.startswith(package + ".")):
            continue
        for obj in list(vars(mod).values()):
            if is_pack_exception(obj, mod_name):
                obj.__module__ = SHORT_MODULE
                renamed.append(obj)
    return renamed


def shown_type(exc_type: type) -> str:
    """The type name ComfyUI shows for an exception class (its full_type_name rule)."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
