"""Pictures of face analysis results: a preview with boxes, keypoints and labels, and a mask of the faces."""
from __future__ import annotations

import math

import numpy as np

# keypoint colours (RGB): eyes blue, nose yellow, mouth corners magenta
KPS_COLOURS = ((60, 140, 255), (60, 140, 255), (255, 220, 0), (230, 60, 230), (230, 60, 230))
SELECTED = (40, 220, 80)
OTHER = (150, 150, 150)


def _label(face) -> str:
    parts = [f"{face.det_score:.2f}"]
    if face.gender is not None:
        parts.append(face.gender)
    if face.age is not None:
        parts.append(str(face.age))
    return " ".join(parts)


def draw_faces(rgb: np.ndarray, selected, others=()) -> np.ndarray:
    """A copy of an RGB uint8 (H, W, 3) image with the selected faces drawn in green (box, 5 keypoints, score,
    gender and age) and the detected but unselected ones as thin grey boxes."""
    import cv2

    out = np.ascontiguousarray(rgb[..., :3]).copy()
    h, w = out.shape[:2]
    t = max(1, round(min(h, w) / 300))
    for f in others:
        x0, y0, x1, y1 = (round(float(v)) for v in f.bbox)
        cv2.rectangle(out, (x0, y0), (x1, y1), OTHER, 1)
    for f in selected:
        x0, y0, x1, y1 = (round(float(v)) for v in f.bbox)
        cv2.rectangle(out, (x0, y0), (x1, y1), SELECTED, t)
        if f.kps is not None:
            for (x, y), c in zip(f.kps, KPS_COLOURS):
                cv2.circle(out, (round(float(x)), round(float(y))), t + 1, c, -1)
        scale = max(0.35, min(h, w) / 800)
        ty = y0 - 4 if y0 - 4 > 10 * scale else min(y1 + int(14 * scale), h - 2)
        cv2.putText(out, _label(f), (max(x0, 0), ty), cv2.FONT_HERSHEY_SIMPLEX, scale, SELECTED, max(1, t),
                    cv2.LINE_AA)
    return out


def faces_mask(h: int, w: int, faces) -> np.ndarray:
    """float32 (H, W): 1 inside every face box (clipped to the image, partly covered pixels included)."""
    m = np.zeros((h, w), np.float32)
    for f in faces:
        x0, y0 = max(0, math.floor(float(f.bbox[0]))), max(0, math.floor(float(f.bbox[1])))
        x1, y1 = min(w, math.ceil(float(f.bbox[2]))), min(h, math.ceil(float(f.bbox[3])))
        if x1 > x0 and y1 > y0:
            m[y0:y1, x0:x1] = 1.0
    return m
