"""Canny edge maps for ControlNet hints (OpenCV's Canny on the 8-bit grayscale image).

IMAGE (B, H, W, 3|4) 0..1 → IMAGE (B, H, W, 3): white (1.0) edges on black, the same map in all three
channels. Each image is rounded to uint8 RGB (alpha ignored), converted to grayscale with OpenCV
(0.299 R + 0.587 G + 0.114 B) and passed to `cv2.Canny(gray, low, high)` with thresholds on the 0–255
scale (aperture 3, L1 gradient, OpenCV's defaults).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.imageops import ImageInputError, check_image, to_uint8


def check_thresholds(low: float, high: float) -> None:
    for name, v in (("low_threshold", low), ("high_threshold", high)):
        if not 0 <= float(v) <= 255 * 4:
            raise ImageInputError(f"{name} is {v}; Canny thresholds are on the 0-255 gradient scale (e.g. 100 / 200)")
    if float(low) > float(high):
        raise ImageInputError(f"low_threshold ({low}) is above high_threshold ({high}); swap them")


def canny_edges(image: torch.Tensor, low_threshold: float = 100, high_threshold: float = 200) -> torch.Tensor:
    import cv2

    check_thresholds(low_threshold, high_threshold)
    image = check_image(image)
    out = []
    for rgb in to_uint8(image[..., :3]):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(gray, float(low_threshold), float(high_threshold))
        out.append(np.repeat(edges[..., None], 3, axis=-1))
    return torch.from_numpy(np.stack(out)).float() / 255.0
