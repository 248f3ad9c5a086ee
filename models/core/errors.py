"""The pack's one error base, its message helper, and out-of-memory errors passed on to ComfyUI.

- `VisionKitError(ValueError)` is the base of every error the pack raises for a person to read (a wrong or
  missing model file, bad input, an unsupported layout). Each engine subclasses it once (`SamModelError`,
  `UpscaleInputError`, ...), so callers can catch one type and tests can name the precise one.
- ComfyUI reports a failed node's `exception_type` as the class's `__module__ + "." + __qualname__`
  (execution.py, `full_type_name`, in 0.3.64 and 0.33 alike). Inside ComfyUI the pack's modules are named
  after the folder the user cloned it into, which used to show a path such as
  `…/custom_nodes/ComfyUI-VisionKit.models.upscale.UpscaleModelError`. Every subclass's `__module__` is set to
  "visionkit" when the class is created, so ComfyUI shows `visionkit.UpscaleModelError` whatever the folder is.
- Causes are chained (`raise SomeError(...) from ex`): ComfyUI logs the whole traceback, and the library's own
  words stay in it under ours.
- Out of memory is not an input error: `reraise_oom(ex, hint)` raises the same exception type again (so
  ComfyUI's handler recognises it, unloads its models and lets the user retry) with our hint added to the
  message.
"""
from __future__ import annotations

SHORT_MODULE = "visionkit"


class VisionKitError(ValueError):
    """An error a person can act on: the first line of the message says what is wrong and what to do."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__module__ = SHORT_MODULE


VisionKitError.__module__ = SHORT_MODULE


def message(what: str, fix: str = "", details: str = "") -> str:
    """One message in the pack's shape: `what` and `fix` on the first line (what is wrong, what to do), then any
    longer `details` (lists of names, the library's words) on the lines after it."""
    first = " ".join(s.strip() for s in (what, fix) if s and s.strip())
    return first + (f"\n{details.strip()}" if details and details.strip() else "")


def is_out_of_memory(ex: BaseException) -> bool:
    """True for torch's accelerator out-of-memory errors (CUDA, and the MPS / XPU ones raised as RuntimeError)."""
    import sys

    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(ex, oom):
        return True
    text = str(ex)
    return isinstance(ex, RuntimeError) and "out of memory" in text.lower()


def reraise_oom(ex: BaseException, hint: str):
    """Raise `ex`'s own type again with `hint` after its message, chained to `ex` (never returns).

    ComfyUI's execution recognises out-of-memory by type (`model_management.OOM_EXCEPTION`) and then unloads
    every model and tells the user; turning it into an input error would skip that recovery."""
    try:
        again = type(ex)(f"{ex}\n{hint}")
    except Exception:  # noqa: BLE001 - a type that will not take one message: keep the original, add a note
        ex.add_note(hint)
        raise ex
    raise again from ex


def shown_type(exc_type: type) -> str:
    """The type name ComfyUI shows for an exception class (its full_type_name rule)."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
