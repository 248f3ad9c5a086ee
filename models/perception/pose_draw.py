"""OpenPose body skeletons: the COCO-17 → OpenPose-18 mapping and the drawing ControlNet openpose was trained on.

ControlNet's openpose model (lllyasviel/ControlNet-v1-1 `control_v11p_sd15_openpose`) learned from skeletons
drawn by the OpenPose annotator: 18 body points (OpenPose's BODY_18 order, with a neck), 17 limbs as filled
ellipses 4 px wide in 60 % of their colour, then every point as a filled circle of radius 4 in full colour, on
black, one person after another. Any other colour order or width is a different picture to the model, so the
layout below is that convention (the same one controlnet_aux and comfyui_controlnet_aux draw with; tests compare
with controlnet_aux's own drawing where it installs). Coordinates are normalised (0..1 of the canvas), as in
those annotators, so a pose can be drawn at any canvas size.

ViTPose (and every COCO model) gives 17 points in COCO order; OpenPose-18 adds the neck, the mid-point of the
two shoulders, present when both shoulders are.
"""
from __future__ import annotations

import math

import numpy as np

# OpenPose BODY_18 names, in order
OPENPOSE_NAMES = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                  "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                  "right_eye", "left_eye", "right_ear", "left_ear")
COCO_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle")
SHOULDERS_COCO = (5, 6)
# OpenPose index → COCO index (None: the neck, computed)
OPENPOSE_FROM_COCO = tuple(None if n == "neck" else COCO_NAMES.index(n) for n in OPENPOSE_NAMES)

# the 17 limbs as pairs of OpenPose indexes (0-based), in drawing order; limb i has colour COLORS[i]
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# RGB; point i has colour COLORS[i]
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
STICK_WIDTH = 4
POINT_RADIUS = 4
LIMB_SHADE = 0.6


def coco_to_openpose(points, scores, threshold: float) -> list:
    """17 COCO points (x, y) + scores → 18 OpenPose entries (x, y, score), None where below the threshold.

    A point is kept when its score is > threshold; the neck is the shoulders' mid-point with their mean score,
    kept when both shoulders are.
    """
    out: list = []
    for coco in OPENPOSE_FROM_COCO:
        if coco is None:
            a, b = SHOULDERS_COCO
            if scores[a] > threshold and scores[b] > threshold:
                out.append(((float(points[a][0]) + float(points[b][0])) / 2,
                            (float(points[a][1]) + float(points[b][1])) / 2,
                            (float(scores[a]) + float(scores[b])) / 2))
            else:
                out.append(None)
        elif scores[coco] > threshold:
            out.append((float(points[coco][0]), float(points[coco][1]), float(scores[coco])))
        else:
            out.append(None)
    return out


def draw_body(canvas: np.ndarray, points: list) -> np.ndarray:
    """Draw one person (18 entries of (x, y[, score]) normalised to 0..1, or None) onto an RGB uint8 canvas."""
    import cv2

    h, w = canvas.shape[:2]
    pix = [None if p is None else (float(p[0]) * float(w), float(p[1]) * float(h)) for p in points]
    for (i, j), color in zip(LIMBS, COLORS):
        if pix[i] is None or pix[j] is None:
            continue
        (x0, y0), (x1, y1) = pix[i], pix[j]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half_length = ((x0 - x1) ** 2 + (y0 - y1) ** 2) ** 0.5 / 2
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(half_length), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * LIMB_SHADE) for c in color])
    for p, color in zip(pix, COLORS):
        if p is not None:
            cv2.circle(canvas, (int(p[0]), int(p[1])), POINT_RADIUS, color, thickness=-1)
    return canvas


def draw_people(height: int, width: int, people: list) -> np.ndarray:
    """A black RGB uint8 (H, W, 3) canvas with every person's skeleton (each 18 normalised entries or None)."""
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    for points in people:
        draw_body(canvas, points)
    return canvas


def limb_midpoints(points: list, height: int, width: int) -> list:
    """(limb index, (x, y) pixel) of every drawn limb's middle: where its colour must be (tests, docs)."""
    out = []
    for k, (i, j) in enumerate(LIMBS):
        if points[i] is not None and points[j] is not None:
            out.append((k, ((points[i][0] + points[j][0]) / 2 * width, (points[i][1] + points[j][1]) / 2 * height)))
    return out
