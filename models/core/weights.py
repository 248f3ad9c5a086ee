"""Loading weights safely: safetensors, or torch.load(weights_only=True). Nothing else is ever unpickled.

Every failure says which file, what was wrong with it and what to do, instead of a deep library error.

Harmless pickled objects: some published checkpoints keep their training arguments (`argparse.Namespace`)
or a metric (a numpy scalar) beside the weights, which weights_only=True refuses by default. A short, named
list of such classes (SAFE_GLOBALS) is allowed through `torch.serialization.safe_globals`; they only hold
plain values, run no code of their own, and are dropped afterwards (only tensors are kept). Any other
global is refused, named in the message (found with `get_unsafe_globals_in_checkpoint`, which reads the
pickle's opcodes without running them); there is never a full unpickle (weights_only=False).
"""
from __future__ import annotations

import os
import re
import zipfile

from .errors import VisionKitError


class WeightsError(VisionKitError):
    """A weights file that cannot be loaded safely or is damaged."""


SAFETENSORS = (".safetensors", ".sft")


def safe_globals() -> list:
    """The classes VisionKit lets weights_only=True build (see the module docstring): plain value holders."""
    import argparse

    out: list = [argparse.Namespace]
    try:  # numpy scalars (e.g. a stored best score) and the dtype classes they name
        import numpy as np
        import numpy.dtypes

        core = getattr(np, "_core", None) or np.core
        out += [core.multiarray.scalar, np.dtype]
        out += [c for c in vars(numpy.dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]
    except (ImportError, AttributeError):
        pass
    return out


def safe_global_names() -> set:
    return {f"{c.__module__}.{c.__qualname__}" for c in safe_globals()}


def pickle_refusal(name: str, found=()) -> str:
    """The pack's one wording for a weights file that holds pickled Python objects (never torch's own, which
    suggests weights_only=False)."""
    found = [g for g in found if g]
    what = (f" (it needs {', '.join(found[:5])}{' …' if len(found) > 5 else ''}, which VisionKit does not load)"
            if found else "")
    return (f"{name} contains pickled Python objects, not just tensors{what}, so VisionKit refuses to load it "
            "(loading it could run code). Use a .safetensors version of this model, or one saved as a plain "
            "state-dict.")


def _unsafe_globals(path: str) -> list[str] | None:
    """Globals a torch.save zip checkpoint names beyond the allowed ones (its opcodes are read, not run);
    None when the file is not one (legacy format, random bytes)."""
    import torch

    get = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if get is None or not _zip(path):
        return None
    try:
        found = get(path)
    except Exception:  # noqa: BLE001  (not a torch checkpoint: torch.load's own error decides below)
        return None
    allowed = safe_global_names()
    return [g for g in found if g not in allowed]


def globals_in_error(msg: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", msg)))


def load_state_dict(path: str, device: str = "cpu") -> dict:
    """A flat {name: tensor} dict from a .safetensors / .pth / .pt / .bin / .ckpt file."""
    import torch

    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as ex:
        raise WeightsError(f"cannot read {path}: {ex.strerror}") from ex
    if size == 0:
        raise WeightsError(f"{name} is an empty (zero-byte) file: the download failed or was cut short; "
                           f"delete {path} and download it again")
    if path.lower().endswith(SAFETENSORS):
        from safetensors.torch import load_file

        try:
            return load_file(path, device=device)
        except Exception as ex:
            raise WeightsError(f"{name} is not a valid safetensors file ({_short(ex)}); it is probably truncated "
                               f"(size {size} bytes): delete it and download it again") from ex
    unsafe = _unsafe_globals(path)
    if unsafe:
        raise WeightsError(pickle_refusal(name, unsafe))
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(path, map_location=device, weights_only=True, mmap=_zip(path))
    except Exception as ex:
        found = globals_in_error(str(ex))
        if found:
            raise WeightsError(pickle_refusal(name, found)) from ex
        raise WeightsError(f"{name} could not be read as PyTorch weights ({_short_load_error(ex)}); it may be "
                           f"truncated or not a weights file: delete it and download it again") from ex
    return unwrap_state_dict(obj, name)


def load_strict(module, sd: dict, name: str, what: str, error=WeightsError) -> None:
    """Load `sd` into `module` exactly; a mismatch is `error` naming the file and the detected model."""
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as ex:
        raise error(f"{name}: weights do not fit the detected {what} ({str(ex).splitlines()[0][:200]})") from ex


def unwrap_state_dict(obj, name: str = "file") -> dict:
    """Checkpoints nest the weights under 'params_ema', 'params', 'state_dict', 'model' …; find them."""
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if not isinstance(obj, dict):
            break
        for k in ("params_ema", "params", "state_dict", "model", "module", "net", "weights"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            # groups of tensors (IP-Adapter / InstantID .bin: {"image_proj": {...}, "ip_adapter": {...}}) become
            # "group.name" keys, the names the same weights have in their .safetensors conversions
            groups = {g: sd for g, sd in obj.items() if isinstance(sd, dict) and sd
                      and all(isinstance(v, torch.Tensor) for v in sd.values())}
            if groups:
                return {f"{g}.{k}": v for g, sd in groups.items() for k, v in sd.items()}
            break
    raise WeightsError(f"{name} holds no tensors VisionKit can read (top-level {type(obj).__name__}); "
                       "is it a model weights file?")


def _zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _short_load_error(ex: Exception) -> str:
    """torch's weights_only errors open with advice to set weights_only=False: keep only what went wrong."""
    msg = str(ex)
    if "weights_only" in msg or "Weights only" in msg:
        for pat in (r"Unsupported operand[^\n]*", r"invalid load key[^\n]*", r"[^\n]*[Tt]runcated[^\n]*"):
            m = re.search(pat, msg)
            if m:
                return m.group(0).strip()[:200]
        return "not a PyTorch pickle"
    return _short(ex)


def _short(ex: Exception) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else type(ex).__name__)[:200]
