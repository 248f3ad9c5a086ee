"""Where VisionKit runs: inside ComfyUI, or standalone (tests, benchmarks, scripts).

This is the one place that asks ComfyUI anything. It never imports ComfyUI on its own: ComfyUI is
"present" when its `folder_paths` module is already loaded (ComfyUI loads it before any custom node),
or never when VISIONKIT_STANDALONE=1. Everything here answers from plain defaults otherwise:

- model folders: ComfyUI's `folder_paths`, else `$VISIONKIT_MODELS_DIR/<folder>` (default
  `~/.cache/visionkit/models`; several roots may be joined with os.pathsep);
- device: ComfyUI's torch device, else `$VISIONKIT_DEVICE`, else CUDA if available, else CPU;
- cache budget: `$VISIONKIT_CACHE_GB`, default half of the device's memory;
- progress bars and cancel: ComfyUI's ProgressBar and interrupt flag, else no-ops.
"""
from __future__ import annotations

import os
import sys
from typing import Callable


def in_comfyui() -> bool:
    if os.environ.get("VISIONKIT_STANDALONE") == "1":
        return False
    fp = sys.modules.get("folder_paths")
    return fp is not None and hasattr(fp, "folder_names_and_paths")


def _folder_paths():
    return sys.modules["folder_paths"]


def models_roots() -> list[str]:
    env = os.environ.get("VISIONKIT_MODELS_DIR")
    if env:
        return [os.path.abspath(os.path.expanduser(p)) for p in env.split(os.pathsep) if p]
    return [os.path.join(os.path.expanduser("~"), ".cache", "visionkit", "models")]


def model_folder_bases(key: str, folder: str) -> list[str]:
    """Folders that hold the models of `key`, first one is where new files should go."""
    if in_comfyui():
        fp = _folder_paths()
        if key in fp.folder_names_and_paths:
            return list(fp.get_folder_paths(key))
        return [os.path.join(fp.models_dir, folder)]
    return [os.path.join(root, folder) for root in models_roots()]


def register_comfy_folders(folders) -> None:
    """Add VisionKit's model folders to ComfyUI's folder_paths, never replacing what is there.

    A key that ComfyUI (or an extra_model_paths.yaml, or another pack) already knows keeps its folders
    and file extensions; VisionKit only appends the default `models/<folder>` when it is missing.
    """
    if not in_comfyui():
        return
    fp = _folder_paths()
    for f in folders:
        default = os.path.join(fp.models_dir, f.folder)
        if f.key in fp.folder_names_and_paths:
            paths, exts = fp.folder_names_and_paths[f.key]
            if default not in paths:
                paths.append(default)
            if isinstance(exts, set) and not exts:  # created by an extra_model_paths.yaml: no filter yet
                exts.update(f.extensions)
        else:
            fp.add_model_folder_path(f.key, default)
            exts = fp.folder_names_and_paths[f.key][1]
            if isinstance(exts, set):
                exts.update(f.extensions)


# ---------------------------------------------------------------- device and memory

def torch_device():
    import torch

    if in_comfyui():
        import comfy.model_management as mm  # already loaded by ComfyUI

        return mm.get_torch_device()
    env = os.environ.get("VISIONKIT_DEVICE")
    if env:
        return torch.device(env)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def default_dtype(device=None):
    """fp16 on CUDA, fp32 elsewhere (the 'auto' of every dtype option)."""
    import torch

    device = device or torch_device()
    return torch.float16 if getattr(device, "type", str(device)) == "cuda" else torch.float32


def device_memory_bytes(device) -> int:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def cache_budget_bytes(device=None) -> int:
    env = os.environ.get("VISIONKIT_CACHE_GB")
    if env:
        try:
            return int(float(env) * (1 << 30))
        except ValueError as ex:
            raise ValueError(f"VISIONKIT_CACHE_GB={env!r} is not a number of GiB (e.g. 8 or 0.5)") from ex
    return device_memory_bytes(device or torch_device()) // 2


def cpu_budget_bytes() -> int:
    import torch

    env = os.environ.get("VISIONKIT_CACHE_CPU_GB")
    if env:
        return int(float(env) * (1 << 30))
    return device_memory_bytes(torch.device("cpu")) // 2


# ---------------------------------------------------------------- progress and cancel

def throw_if_cancelled() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel; no-op standalone."""
    if in_comfyui():
        mm = sys.modules.get("comfy.model_management")
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()


class Progress:
    """A progress bar: ComfyUI's on the node when inside ComfyUI, else an optional callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None):
        self.total = max(int(total), 1)
        self.done = 0
        self._cb = callback
        self._bar = None
        if in_comfyui():
            try:
                import comfy.utils

                self._bar = comfy.utils.ProgressBar(self.total)
            except Exception:  # no server / no executing node: progress is a nicety
                self._bar = None

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total)
        if self._cb is not None:
            self._cb(self.done, self.total)
        throw_if_cancelled()
