"""ComfyUI's IMAGE / MASK tensors and the formats libraries want, both ways, batches and alpha kept.

IMAGE: torch float32 (B, H, W, C) in 0..1, C = 3 (4 accepted: RGBA; 1 accepted: grayscale).
MASK:  torch float32 (B, H, W) in 0..1.
OpenCV-based libraries (insightface, Real-ESRGAN) want uint8 BGR (H, W, 3) numpy arrays per image.
uint8 conversion rounds (x * 255 to the nearest integer), so uint8 → IMAGE → uint8 is exact.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import VisionKitError


class ImageInputError(VisionKitError):
    """An IMAGE or MASK that cannot be used; the message says what was wrong and how to fix it."""


# ------------------------------------------------------------------ checks
def check_image(image, name: str = "image") -> torch.Tensor:
    """Validate an IMAGE and return it as float32 (B, H, W, 3|4). Grayscale becomes 3 channels."""
    if not isinstance(image, torch.Tensor):
        raise ImageInputError(f"{name} is a {type(image).__name__}, not an IMAGE tensor; connect an IMAGE output "
                              "(e.g. Load Image)")
    if image.ndim == 3:  # a single image without batch axis
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ImageInputError(f"{name} has shape {tuple(image.shape)}; an IMAGE is (batch, height, width, channels)")
    b, h, w, c = image.shape
    if b == 0 or h == 0 or w == 0:
        raise ImageInputError(f"{name} is empty (shape {tuple(image.shape)}); connect an image with pixels")
    if c == 1:
        image = image.expand(b, h, w, 3)
    elif c not in (3, 4):
        raise ImageInputError(f"{name} has {c} channels; VisionKit takes RGB (3), RGBA (4) or grayscale (1): "
                              "convert it to RGB first (e.g. save it as PNG/JPEG and load it with Load Image)")
    image = image.float()
    if not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ImageInputError(f"{name} contains {bad} NaN or infinite value(s); the node that made it went wrong "
                              "(check its inputs), or clean it with an image-clamp node")
    return image


def check_mask(mask, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ImageInputError(f"{name} is a {type(mask).__name__}, not a MASK tensor; connect a MASK output "
                              "(e.g. Load Image's mask, or a VisionKit segmentation node)")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ImageInputError(f"{name} has shape {tuple(mask.shape)}; a MASK is (batch, height, width): connect a "
                              "MASK output, or convert the image to a mask (e.g. core 'Convert Image to Mask')")
    if mask.numel() == 0:
        raise ImageInputError(f"{name} is empty (shape {tuple(mask.shape)}); connect a mask with pixels")
    mask = mask.float()
    if not torch.isfinite(mask).all():
        raise ImageInputError(f"{name} contains NaN or infinite values; the node that made it went wrong (check its "
                              "inputs)")
    return mask


def split_alpha(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(RGB image, alpha MASK or None)."""
    if image.shape[-1] == 4:
        return image[..., :3], image[..., 3]
    return image, None


def match_mask(mask: torch.Tensor, image: torch.Tensor, mask_name: str = "mask",
               image_name: str = "image") -> torch.Tensor:
    """A mask for every image of the batch, at the image's size.

    Batch 1 applies to every image; another batch mismatch is an error naming both sizes; another
    height/width is resized (bilinear).
    """
    mask = check_mask(mask, mask_name)
    b, h, w = image.shape[:3]
    if mask.shape[0] not in (1, b):
        raise ImageInputError(f"{mask_name} has a batch of {mask.shape[0]} but {image_name} has {b}; give one mask "
                              "for all images or one per image")
    if mask.shape[1:] != (h, w):
        mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(h, w), mode="bilinear",
                                               align_corners=False).squeeze(1).clamp(0, 1)
    if mask.shape[0] == 1 and b > 1:
        mask = mask.expand(b, h, w)
    return mask


# ------------------------------------------------------------------ conversions
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """IMAGE or MASK → uint8 numpy with the same shape (rounded)."""
    return (x.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0


def image_to_bgr_list(image: torch.Tensor) -> list[np.ndarray]:
    """IMAGE → list of uint8 BGR (H, W, 3) arrays for OpenCV libraries (alpha dropped; see split_alpha)."""
    return [np.ascontiguousarray(a[..., 2::-1]) for a in to_uint8(image[..., :3])]
