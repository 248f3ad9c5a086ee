"""What each network of an InsightFace pack computes on one BGR uint8 image, as insightface's model classes do:
SCRFD detection (letterbox resize, anchors, distance decoding, NMS), ArcFace's 5-point similarity alignment
and embedding, and the gender/age crop. The sessions are the shared cache's (faces.py opens them); the
pre- and post-processing is reproduced here, and tests/test_faces.py compares it with insightface's own.
"""
from __future__ import annotations

import numpy as np

from .faces_pack import OnnxInfo

NMS_THRESH = 0.4  # insightface's SCRFD default
DET_MEAN, DET_STD = 127.5, 128.0  # SCRFD input normalisation


# ------------------------------------------------------------------ detection (SCRFD)
def _det_layout(info: OnnxInfo) -> tuple:
    n = len(info.outputs)
    return ((8, 16, 32), 2) if n in (6, 9) else ((8, 16, 32, 64, 128), 1)


def _anchor_centers(h: int, w: int, stride: int, anchors: int) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    c = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(c, anchors, axis=0) if anchors > 1 else c


def nms(dets: np.ndarray, thresh: float = NMS_THRESH) -> list:
    """Greedy NMS on (N, 5) [x0, y0, x1, y1, score] sorted by score; areas with SCRFD's +1 convention."""
    x0, y0, x1, y1, s = dets.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter) <= thresh]
    return keep


def detect(session, info: OnnxInfo, img: np.ndarray, det_size: int, thresh: float) -> tuple:
    """SCRFD on one BGR uint8 image: (dets (N, 5) float32 [box, score], kps (N, 5, 2) float32), best first."""
    import cv2

    ih, iw = info.input_hw
    in_w, in_h = (iw, ih) if ih and iw else (det_size, det_size)
    h, w = img.shape[:2]
    if h / w > in_h / in_w:
        new_h = in_h
        new_w = int(new_h / (h / w))
    else:
        new_w = in_w
        new_h = int(new_w * (h / w))
    scale = float(new_h) / h
    canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h))
    blob = cv2.dnn.blobFromImage(canvas, 1.0 / DET_STD, (in_w, in_h), (DET_MEAN,) * 3, swapRB=True)
    inp = session.get_inputs()[0].name
    outs = session.run(None, {inp: np.ascontiguousarray(blob, dtype=np.float32)})
    strides, anchors = _det_layout(info)
    fmc, batched = len(strides), len(outs[0].shape) == 3
    scores_l, boxes_l, kps_l = [], [], []
    for k, stride in enumerate(strides):
        sc, bb, kp = outs[k], outs[k + fmc], outs[k + 2 * fmc]
        if batched:
            sc, bb, kp = sc[0], bb[0], kp[0]
        centers = _anchor_centers(in_h // stride, in_w // stride, stride, anchors)
        bb, kp = bb * stride, kp * stride
        pos = np.where(sc >= thresh)[0]
        c = centers[pos]
        d = bb[pos]
        boxes_l.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1))
        kd = kp[pos].reshape(len(pos), kp.shape[1] // 2, 2)
        kps_l.append(c[:, None, :] + kd)
        scores_l.append(sc[pos])
    if sum(len(s) for s in scores_l) == 0:
        return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
    scores = np.vstack(scores_l)
    order = np.argsort(-scores.ravel(), kind="stable")
    boxes = np.vstack(boxes_l) / scale
    kps = np.vstack(kps_l) / scale
    dets = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order]
    kps = kps[order]
    keep = nms(dets)
    return dets[keep], kps[keep].astype(np.float32, copy=False)


# ------------------------------------------------------------------ alignment, recognition, gender/age
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src points onto dst (Umeyama 1991), 2×3.

    Computed in the points' own precision (float32 for detector keypoints and ArcFace's template), as
    insightface's alignment (skimage) does: the crops then match insightface's to the grey level.
    """
    src, dst = np.asarray(src), np.asarray(dst)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1
    u, sv, vt = np.linalg.svd(cov)
    rot = u @ np.diag(sign) @ vt
    var = s0.var(axis=0).sum()
    scale = 1.0 / var * (sv @ sign) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, 2] = md - scale * (rot @ ms)
    m[:, :2] = rot * scale
    return m


def arcface_matrix(kps: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2×3 transform moving the 5 keypoints onto ArcFace's template at `size` (a multiple of 112 or 128)."""
    ratio, dx = (size / 112.0, 0.0) if size % 112 == 0 else (size / 128.0, 8.0 * size / 128.0)
    dst = ARCFACE_DST * ratio
    dst[:, 0] += dx
    return similarity_transform(kps, dst)


def align_face(img: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """The ArcFace input crop of a face (BGR uint8, size × size)."""
    import cv2

    return cv2.warpAffine(img, arcface_matrix(kps, size), (size, size), borderValue=0.0)


def _run_single(session, img: np.ndarray, mean: float, std: float) -> np.ndarray:
    import cv2

    size = (img.shape[1], img.shape[0])
    blob = cv2.dnn.blobFromImages([img], 1.0 / std, size, (mean,) * 3, swapRB=True)
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(blob, dtype=np.float32)})[0]


def embed(session, info: OnnxInfo, img: np.ndarray, kps: np.ndarray) -> np.ndarray:
    mean, std = (0.0, 1.0) if info.mxnet_norm else (127.5, 127.5)
    return _run_single(session, align_face(img, kps, info.input_hw[1]), mean, std).flatten()


def genderage_matrix(bbox: np.ndarray, size: int) -> np.ndarray:
    """insightface's gender/age crop (2×3): the box centre to the middle, its longer side × 1.5 to `size`."""
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    cx, cy = (bbox[2] + bbox[0]) / 2, (bbox[3] + bbox[1]) / 2
    s = size / (max(w, h) * 1.5)
    # as skimage composes insightface's transforms: the products in float32 (the box's type), the sums in float64
    return np.array([[s, 0.0, size / 2 - float(cx * s)], [0.0, s, size / 2 - float(cy * s)]], dtype=np.float64)


def gender_age(session, info: OnnxInfo, img: np.ndarray, bbox: np.ndarray) -> tuple:
    """("M" or "F", age in years) from the pack's gender/age model."""
    import cv2

    size = info.input_hw[1]
    crop = cv2.warpAffine(img, genderage_matrix(bbox, size), (size, size), borderValue=0.0)
    mean, std = (0.0, 1.0) if info.mxnet_norm else (127.5, 128.0)
    pred = _run_single(session, crop, mean, std)[0]
    return ("M" if int(np.argmax(pred[:2])) == 1 else "F"), int(np.round(pred[2] * 100))
