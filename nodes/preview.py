"""Image previews on the canvas: a node returns {"ui": {"images": [...]}} and ComfyUI shows them on it.

Only inside ComfyUI (the files go to its temp folder, which it empties itself); outside (tests, the CLI)
there is no canvas, so `preview_ui` returns None and the node returns its plain result tuple.
"""
from __future__ import annotations

import os
import uuid

import torch

from ..models.core import host


def preview_ui(images: torch.Tensor, prefix: str = "VisionKit") -> dict | None:
    """{"images": [{"filename", "subfolder", "type": "temp"}, ...]} for an IMAGE batch, or None outside ComfyUI."""
    if not host.in_comfyui() or images is None or images.ndim != 4 or images.shape[0] == 0:
        return None
    import folder_paths  # ComfyUI's module, present when in_comfyui()
    from PIL import Image

    temp = folder_paths.get_temp_directory()
    h, w = int(images.shape[1]), int(images.shape[2])
    # A random part per call: two runs (or two nodes) never overwrite each other's previews.
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        f"{prefix}_{uuid.uuid4().hex[:8]}", temp, w, h)
    os.makedirs(folder, exist_ok=True)
    out = []
    for i, img in enumerate(images):
        arr = img[..., :3].detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        file = f"{name}_{counter + i:05d}_.png"
        Image.fromarray(arr).save(os.path.join(folder, file), compress_level=1)
        out.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return {"images": out}


def with_preview(result: tuple, images: torch.Tensor, prefix: str = "VisionKit"):
    """The node's return value: the result tuple, plus the preview for the canvas when in ComfyUI."""
    ui = preview_ui(images, prefix)
    return {"ui": ui, "result": result} if ui else result
