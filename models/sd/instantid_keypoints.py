"""The InstantID keypoint image: a face's 5 landmarks drawn as IdentityNet was trained to see them.

InstantID's IdentityNet (its ControlNet) takes, instead of an edge or pose map, an image of the five
InsightFace keypoints (left eye, right eye, nose, left and right mouth corner) on black:

- four "limbs" from each of the other points to the nose (0-2, 1-2, 3-2, 4-2), each a filled ellipse
  along the segment (half-length = half the distance, half-width `STICK_WIDTH` = 4 px, rotated to the
  segment's angle, drawn with OpenCV's ellipse polygon at 1° steps) in the colour of its outer point;
  the limb layer is then dimmed to 60 % (truncated to integers);
- then a filled circle of radius 10 px in full colour at every point.

Colours, in keypoint order: red, green, blue, yellow, magenta. This is the geometry of draw_kps in
InstantID's reference pipeline (pipeline_stable_diffusion_xl_instantid.py), written anew here: pixel
coordinates are truncated to integers like the reference does, so images match it.

Keypoints outside the image are fine (the shapes are clipped); absurd values are clamped to a range
OpenCV's fixed-point drawing handles, and non-finite points are left out.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import VisionKitError

COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # (outer point, nose)
STICK_WIDTH = 4
LIMB_DIM = 0.6
POINT_RADIUS = 10


class KeypointsError(VisionKitError):
    """Keypoints that cannot be drawn (wrong shape); the message says what was given."""


def _as_points(kps) -> np.ndarray:
    a = np.asarray(kps.detach().cpu().numpy() if isinstance(kps, torch.Tensor) else kps, dtype=np.float64)
    if a.ndim != 2 or a.shape != (5, 2):
        raise KeypointsError(f"InstantID needs the 5 face keypoints as a (5, 2) array of x, y pixels; got shape "
                             f"{a.shape}")
    return a


def _clamp(v: float, size: int) -> int:
    lim = 8 * max(size, 1) + 1024  # far enough outside to keep every direction, small enough for OpenCV
    return int(min(max(v, -lim), lim))


def draw_keypoints(kps, width: int, height: int) -> np.ndarray:
    """The keypoint image (height, width, 3) uint8 RGB for one face's 5 keypoints (x, y in pixels)."""
    import cv2

    pts = _as_points(kps)
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise KeypointsError(f"the keypoint image must be at least 1×1 pixels, not {width}×{height}")
    size = max(width, height)
    ok = np.isfinite(pts).all(axis=1)
    limbs = np.zeros((height, width, 3), dtype=np.float64)
    for outer, nose in LIMBS:
        if not (ok[outer] and ok[nose]):
            continue
        (x0, y0), (x1, y1) = pts[outer], pts[nose]
        half = math.hypot(x0 - x1, y0 - y1) / 2
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        center = (_clamp((x0 + x1) / 2, size), _clamp((y0 + y1) / 2, size))
        poly = cv2.ellipse2Poly(center, (_clamp(half, size), STICK_WIDTH), int(angle), 0, 360, 1)
        limbs = cv2.fillConvexPoly(limbs, poly, COLORS[outer])
    out = np.ascontiguousarray((limbs * LIMB_DIM).astype(np.uint8))
    for i, (x, y) in enumerate(pts):
        if ok[i]:
            out = cv2.circle(out, (_clamp(x, size), _clamp(y, size)), POINT_RADIUS, COLORS[i], -1)
    return out


def keypoints_image(kps, width: int, height: int) -> torch.Tensor:
    """The keypoint image as an IMAGE (1, height, width, 3) float32 0..1."""
    return torch.from_numpy(draw_keypoints(kps, width, height)).float().div(255.0).unsqueeze(0)
