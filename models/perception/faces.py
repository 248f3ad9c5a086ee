"""InsightFace face analysis on ONNX sessions from the shared cache: detection, ArcFace embeddings, age/gender.

A pack is a folder `insightface/models/<name>/` of .onnx files (antelopev2, buffalo_l, ...). What each
file is comes from its graph, by insightface's own rules (model_zoo.ModelRouter): 5 or more outputs =
SCRFD detector; input 192×192 = landmarks (not used here); 96×96 with 3 outputs = gender/age; a square
input of at least 112 that 16 divides = ArcFace recogniser. Per task the first file in name order wins,
as in insightface's FaceAnalysis. Nothing is ever downloaded: a missing pack is an error naming the
folder and the files expected in it.

The sessions are `onnx_sessions.session_spec` entries of the shared cache (one per file and provider,
released by purges and ComfyUI's /free); insightface's model classes, which open their own sessions, are
not used. Their pre- and post-processing is reproduced here (SCRFD letterbox resize, anchors, distance
decoding, NMS; ArcFace's 5-point similarity alignment; the gender/age crop) and tests/test_faces.py
checks boxes, keypoints, scores, embeddings, age and gender against `insightface.app.FaceAnalysis` on the
same tiny ONNX packs. Everything returned is plain CPU numpy data.

Public API (other engines, e.g. InstantID, import these):
- `FACE_MODEL_TYPE = "VK_FACE_MODEL"`, `FACES_TYPE = "VK_FACES"`: the socket type names.
- `FaceModelHandle(name, path, provider, det_size, det_thresh)`: frozen dataclass, the VK_FACE_MODEL
  value (pack name, pack folder, "auto"/"CUDA"/"CPU", square detector input side in pixels, minimum
  detection score).
- `load_face_model(name, provider="auto", det_size=640, det_thresh=0.5) -> FaceModelHandle`: resolves
  and checks the pack (a detector with keypoints is required) and the provider up front.
- `Face`: dataclass with `bbox` (float32 (4,) x0, y0, x1, y1 in pixels), `kps` (float32 (5, 2): eyes,
  nose, mouth corners), `det_score`, `embedding` (float32 (D,) raw ArcFace output, or None when the pack
  has no recogniser), `normed_embedding`, `age` (int or None), `gender` ("M"/"F" or None),
  `image_index`, `image_size` (h, w), `pack` (the pack's name).
- `analyze(handle, image) -> list[list[Face]]`: one list per image of the IMAGE batch (B, H, W, C floats
  0..1), in the detector's order (highest score first); an image without faces gives an empty list.
- `select_faces(faces, mode, index=0)`: modes "largest", "highest score", "left to right index" (the
  index-th face from the left, by x0; none when there are fewer), "all".
- `cosine_similarity(a, b) -> float` for two Faces or embeddings; `NoRecognitionError` when a Face has
  no embedding.
- `NoFaceError(ValueError)`: raised by `require_faces` (and the nodes' "error" option), naming the image.
- VK_FACES value: a tuple with one tuple of Face per image of the batch (`as_faces_value`).
"""
from __future__ import annotations

import functools
import os
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from ..core import folders, host
from ..core.cache import get_cache
from ..core.errors import VisionKitError
from ..core.imageops import check_image, image_to_bgr_list
from ..core.onnx_sessions import PROVIDERS, choose_providers, session_spec

FACE_MODEL_TYPE = "VK_FACE_MODEL"
FACES_TYPE = "VK_FACES"
SELECTIONS = ("largest", "highest score", "left to right index", "all")
TASKS_USED = ("detection", "recognition", "genderage")
NMS_THRESH = 0.4  # insightface's SCRFD default
DET_MEAN, DET_STD = 127.5, 128.0  # SCRFD input normalisation

# the files of the packs people use, for the "pack not found" message
KNOWN_PACKS = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
}


class FacePackError(VisionKitError):
    """A pack folder that cannot be used as it is; the message says which file and what to do."""


class FacePackMissingError(folders.ModelNotFoundError):
    """The pack is not in the insightface folders; the message names the folder and the expected files."""


class NoFaceError(VisionKitError):
    """An image in which no face was found (or selected), where the workflow asked for an error."""


class NoRecognitionError(VisionKitError):
    """Faces without embeddings (their pack has no ArcFace recogniser) used where identity is needed."""


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class FaceModelHandle:
    """The VK_FACE_MODEL value: a small description; the sessions live in the shared cache."""

    name: str
    path: str
    provider: str = "auto"
    det_size: int = 640
    det_thresh: float = 0.5


@dataclass(eq=False)
class Face:
    bbox: np.ndarray
    kps: np.ndarray
    det_score: float
    embedding: np.ndarray | None = None
    age: int | None = None
    gender: str | None = None
    image_index: int = 0
    image_size: tuple = (0, 0)
    pack: str = ""

    @property
    def normed_embedding(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        n = float(np.linalg.norm(self.embedding))
        return self.embedding / n if n > 0 else self.embedding

    @property
    def area(self) -> float:
        return float(max(self.bbox[2] - self.bbox[0], 0) * max(self.bbox[3] - self.bbox[1], 0))

    def to_json(self) -> dict:
        return {"image": self.image_index, "box": [round(float(v), 2) for v in self.bbox],
                "score": round(float(self.det_score), 4), "kps": [[round(float(v), 2) for v in p] for p in self.kps],
                "age": self.age, "gender": self.gender, "has_embedding": self.embedding is not None}


def as_faces_value(per_image) -> tuple:
    """The VK_FACES value: a tuple (one per image) of tuples of Face."""
    return tuple(tuple(faces) for faces in per_image)


# ------------------------------------------------------------------ pack inspection
@dataclass(frozen=True)
class OnnxInfo:
    path: str
    task: str  # detection / recognition / genderage / landmark / swapper / unknown
    input_hw: tuple  # (h, w); None entries for dynamic axes
    outputs: tuple  # shapes of the outputs (None for dynamic axes)
    mxnet_norm: bool  # the graph normalises its input itself (insightface: mean 0, std 1)


@dataclass(frozen=True)
class PackInfo:
    path: str
    files: dict = field(default_factory=dict)  # task -> OnnxInfo (first file per task)
    ignored: tuple = ()  # (file name, task) not used by VisionKit


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.dim_value > 0 else None for d in value_info.type.tensor_type.shape.dim)


@functools.lru_cache(maxsize=64)
def _inspect_file(path: str, size: int, mtime_ns: int) -> OnnxInfo:
    import onnx

    try:
        try:
            m = onnx.load_model(path, load_external_data=False)
        except TypeError:  # pragma: no cover - older onnx
            m = onnx.load_model(path)
    except Exception as ex:  # noqa: BLE001 - onnx raises many kinds for a damaged file
        raise FacePackError(f"{os.path.basename(path)} in {os.path.dirname(path)} is not a readable .onnx file "
                            f"({str(ex).splitlines()[0][:160] if str(ex) else type(ex).__name__}); download the pack "
                            "again") from ex
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    shape = _dims(inputs[0]) if inputs else ()
    outs = tuple(_dims(o) for o in m.graph.output)
    hw = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    names = [n.name for n in m.graph.node[:8]]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    bn_data = any(n == "bn_data" for n in names[:3])
    if len(outs) >= 5:
        task = "detection"
    elif hw == (192, 192):
        task = "landmark"
    elif hw == (96, 96):
        task = "genderage" if len(outs) == 1 and len(outs[0]) == 2 and outs[0][1] == 3 else "attribute"
    elif len(inputs) == 2 and hw == (128, 128):
        task = "swapper"
    elif hw[0] is not None and hw[0] == hw[1] and hw[0] >= 112 and hw[0] % 16 == 0:
        task = "recognition"
    else:
        task = "unknown"
    # ArcFace models only count 'Sub'/'Mul' names; gender/age models also the mxnet 'bn_data' layer
    mx = (sub and mul) or (task == "genderage" and bn_data)
    return OnnxInfo(path, task, hw, outs, mx)


def inspect_file(path: str) -> OnnxInfo:
    st = os.stat(path)
    return _inspect_file(path, st.st_size, st.st_mtime_ns)


def inspect_pack(path: str) -> PackInfo:
    """Classify the .onnx files of a pack folder and check what VisionKit needs (a keypoint detector)."""
    pack = os.path.basename(path.rstrip(os.sep))
    if os.path.isfile(os.path.join(path, "manifest.json")):
        raise FacePackError(f"the pack {pack!r} ({path}) is an insightface manifest package (manifest.json); "
                            "VisionKit reads the classic packs (antelopev2, buffalo_l) whose .onnx files are "
                            "recognised by their graphs")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(".onnx") and not n.startswith("."))
    files, ignored = {}, []
    for n in names:
        info = inspect_file(os.path.join(path, n))
        if info.task in TASKS_USED and info.task not in files:
            files[info.task] = info
        else:
            ignored.append((n, info.task))
    det = files.get("detection")
    if det is None:
        raise FacePackError(
            f"the pack {pack!r} ({path}) has no face detector: none of {', '.join(names) or 'its files'} has the "
            "SCRFD outputs (scores, boxes, keypoints per stride). Put the pack's detector (det_10g.onnx in buffalo_l, "
            "scrfd_10g_bnkps.onnx in antelopev2) into the folder")
    n_out = len(det.outputs)
    if n_out not in (9, 15):
        why = ("it has no keypoint outputs, which face alignment needs" if n_out in (6, 10)
               else f"it has {n_out} outputs (SCRFD has 9 or 15)")
        raise FacePackError(f"{os.path.basename(det.path)} in pack {pack!r} cannot be used: {why}. Use a keypoint "
                            "SCRFD detector such as det_10g.onnx or scrfd_10g_bnkps.onnx")
    rec = files.get("recognition")
    if rec is not None and rec.input_hw[0] % 112 and rec.input_hw[0] % 128:
        raise FacePackError(f"{os.path.basename(rec.path)} in pack {pack!r} takes {rec.input_hw[0]}-pixel faces; "
                            "ArcFace alignment works at multiples of 112 or 128")
    return PackInfo(path, files, tuple(ignored))


# ------------------------------------------------------------------ loading
def missing_pack_message(name: str) -> str:
    bases = folders.folder_paths_for("insightface")
    where = bases[0] if bases else "models/insightface/models"
    available = folders.list_models("insightface")
    expected = KNOWN_PACKS.get(os.path.basename(name))
    files = (", ".join(expected) if expected
             else "a keypoint SCRFD detector (e.g. det_10g.onnx), an ArcFace recogniser (e.g. w600k_r50.onnx), "
                  "optionally genderage.onnx")
    msg = (f"InsightFace pack {name!r} was not found. VisionKit looks for the folder {os.path.join(where, name)} "
           f"holding the pack's .onnx files ({files}). Folders searched: {', '.join(bases) or '(none configured)'}; "
           f"packs found there: {', '.join(available) or 'none'}.")
    deeper = [a for a in available if a.endswith("/" + name)]
    if deeper:
        msg += (f" The pack is one folder deeper ({deeper[0]}): pick that entry, or move its .onnx files up into "
                f"{os.path.join(where, name)}.")
    elif any(os.path.isdir(os.path.join(b, name)) for b in bases):
        msg += " That folder exists but holds no .onnx files (an unfinished unzip?)."
    return msg + (" VisionKit never downloads models: get the pack from the insightface model zoo "
                  "(deepinsight/insightface; non-commercial research licence), unzip it there, then refresh the page.")


def resolve_pack(name: str) -> str:
    n = folders.check_name(name)
    if n not in folders.list_models("insightface"):
        raise FacePackMissingError(missing_pack_message(n))
    return folders.resolve("insightface", n)


def pack_fingerprint(path: str) -> str:
    """Changes when any .onnx file of the pack changes (name, size, mtime)."""
    parts = []
    for n in sorted(os.listdir(path)):
        if n.lower().endswith(".onnx"):
            st = os.stat(os.path.join(path, n))
            parts.append(f"{n}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts) or "empty"


def check_det_size(det_size: int) -> int:
    d = int(det_size)
    if d < 64 or d > 4096 or d % 32:
        raise ValueError(f"det_size {det_size} is not usable: the detector input side must be a multiple of 32 "
                         "between 64 and 4096 (640 is insightface's default)")
    return d


def load_face_model(name: str, provider: str = "auto", det_size: int = 640, det_thresh: float = 0.5) -> FaceModelHandle:
    if provider not in PROVIDERS:
        raise ValueError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    d = check_det_size(det_size)
    t = float(det_thresh)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"det_thresh {det_thresh} must be in (0, 1]; 0.5 is insightface's default")
    path = resolve_pack(name)
    inspect_pack(path)
    choose_providers(provider)  # a CUDA choice that cannot work is explained now, not at the first image
    return FaceModelHandle(folders.check_name(name), path, provider, d, t)


def specs_for(handle: FaceModelHandle, pack: PackInfo | None = None) -> dict:
    """The cache specs of the sessions the handle uses: task -> ModelSpec."""
    pack = pack or inspect_pack(handle.path)
    return {task: session_spec(info.path, handle.provider) for task, info in pack.files.items()}


def preload(handle: FaceModelHandle) -> None:
    for spec in specs_for(handle).values():
        get_cache().load(spec)


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


# ------------------------------------------------------------------ the batch
def analyze(handle: FaceModelHandle, image, progress: host.Progress | None = None) -> list:
    """Faces of every image of an IMAGE batch: a list (per image) of lists of Face, best score first."""
    image = check_image(image)
    pack = inspect_pack(handle.path)
    specs = specs_for(handle, pack)
    b, h, w = image.shape[:3]
    progress = progress or host.Progress(b)
    result = []
    with ExitStack() as stack:
        sess = {task: stack.enter_context(get_cache().use(spec)) for task, spec in specs.items()}
        for i in range(b):
            host.throw_if_cancelled()
            img = image_to_bgr_list(image[i:i + 1])[0]
            dets, kpss = detect(sess["detection"], pack.files["detection"], img, handle.det_size, handle.det_thresh)
            faces = []
            for j in range(len(dets)):
                f = Face(bbox=dets[j, :4].copy(), kps=kpss[j].copy(), det_score=float(dets[j, 4]), image_index=i,
                         image_size=(h, w), pack=handle.name)
                if "genderage" in sess:
                    f.gender, f.age = gender_age(sess["genderage"], pack.files["genderage"], img, f.bbox)
                if "recognition" in sess:
                    f.embedding = embed(sess["recognition"], pack.files["recognition"], img, f.kps)
                faces.append(f)
            result.append(faces)
            progress.update()
    return result


def select_faces(faces, mode: str, index: int = 0) -> list:
    faces = list(faces)
    if mode == "all" or not faces:
        return faces
    if mode == "largest":
        return [max(faces, key=lambda f: f.area)]
    if mode == "highest score":
        return [max(faces, key=lambda f: f.det_score)]
    if mode == "left to right index":
        ordered = sorted(faces, key=lambda f: float(f.bbox[0]))
        return [ordered[index]] if 0 <= index < len(ordered) else []
    raise ValueError(f"face selection {mode!r} is not one of {', '.join(SELECTIONS)}")


def require_faces(selected, image_index: int, found: int, mode: str = "", index: int = 0) -> None:
    """Raise NoFaceError for an image whose selection is empty, saying what was found and what to do."""
    if selected:
        return
    if found:
        raise NoFaceError(f"image {image_index} of the batch (batch index {image_index}) has {found} face(s), but "
                          f"'{mode}' with index {index} selects none (indexes start at 0); lower the index, or set "
                          "if_no_face to 'empty result' to continue without a face")
    raise NoFaceError(f"no face was found in image {image_index} of the batch (batch index {image_index}). Use an "
                      "image with a clearly visible, not too small face, lower det_thresh or change det_size in the "
                      "face analysis loader, or set if_no_face to 'empty result' to continue without a face")


def _embedding(x, what: str) -> np.ndarray:
    if isinstance(x, Face):
        if x.embedding is None:
            raise NoRecognitionError(
                f"{what} has no identity embedding: its pack {x.pack or '(unknown)'!r} has no recognition model (an "
                "ArcFace .onnx such as w600k_r50.onnx in buffalo_l or glintr100.onnx in antelopev2). Use a pack "
                "with a recogniser")
        return np.asarray(x.embedding, np.float64).ravel()
    return np.asarray(x, np.float64).ravel()


def cosine_similarity(a, b) -> float:
    ea, eb = _embedding(a, "the first face"), _embedding(b, "the second face")
    if ea.shape != eb.shape:
        raise ValueError(f"the embeddings have different sizes ({ea.size} and {eb.size}): they come from different "
                         "recognition models, which cannot be compared; analyse both with the same pack")
    na, nb = np.linalg.norm(ea), np.linalg.norm(eb)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(ea, eb) / (na * nb))
