"""Loading weights safely: safetensors, or torch.load(weights_only=True). Nothing else is ever unpickled.

Every failure says which file, what was wrong with it and what to do, instead of a deep library error.
"""
from __future__ import annotations

import os
import zipfile


class WeightsError(ValueError):
    """A weights file that cannot be loaded safely or is damaged."""


SAFETENSORS = (".safetensors", ".sft")


def load_state_dict(path: str, device: str = "cpu") -> dict:
    """A flat {name: tensor} dict from a .safetensors / .pth / .pt / .bin / .ckpt file."""
    import torch

    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as ex:
        raise WeightsError(f"cannot read {path}: {ex.strerror}") from None
    if size == 0:
        raise WeightsError(f"{name} is an empty (zero-byte) file: the download failed or was cut short; "
                           f"delete {path} and download it again")
    if path.lower().endswith(SAFETENSORS):
        from safetensors.torch import load_file

        try:
            return load_file(path, device=device)
        except Exception as ex:
            raise WeightsError(f"{name} is not a valid safetensors file ({_short(ex)}); it is probably truncated "
                               f"(size {size} bytes): delete it and download it again") from None
    try:
        obj = torch.load(path, map_location=device, weights_only=True, mmap=_zip(path))
    except Exception as ex:
        msg = str(ex)
        if "Weights only load failed" in msg or "weights_only" in msg or "Unsupported global" in msg:
            raise WeightsError(
                f"{name} contains pickled Python objects, not just tensors, so VisionKit refuses to load it "
                "(loading it could run code). Use a .safetensors version of this model, or one saved as a "
                "plain state-dict.") from None
        raise WeightsError(f"{name} could not be read as PyTorch weights ({_short(ex)}); it may be truncated or "
                           f"not a weights file: delete it and download it again") from None
    return unwrap_state_dict(obj, name)


def load_strict(module, sd: dict, name: str, what: str, error=WeightsError) -> None:
    """Load `sd` into `module` exactly; a mismatch is `error` naming the file and the detected model."""
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as ex:
        raise error(f"{name}: weights do not fit the detected {what} ({str(ex).splitlines()[0][:200]})") from None


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


def _short(ex: Exception) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else type(ex).__name__)[:200]
