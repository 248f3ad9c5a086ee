"""InsightFace face analysis on ONNX sessions from the shared cache: detection, ArcFace embeddings, age/gender.

The pack (faces_pack.py) is a folder of .onnx files told apart by their graphs; its sessions are
`onnx_sessions.session_spec` entries of the shared cache (one per file and provider, released by purges and
ComfyUI's /free); insightface's model classes, which open their own sessions, are not used. What each
network computes is faces_networks.py, and tests/test_faces.py checks boxes, keypoints, scores, embeddings,
age and gender against `insightface.app.FaceAnalysis` on the same tiny ONNX packs. Everything returned is
plain CPU numpy data.

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
- `NoFaceError` (a VisionKitError): raised by `require_faces` (and the nodes' "error" option), naming the image.
- VK_FACES value: a tuple with one tuple of Face per image of the batch (`as_faces_value`).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from ..core import folders, host
from ..core.cache import get_cache
from ..core.errors import VisionKitError
from ..core.imageops import check_image, image_to_bgr_list
from ..core.onnx_sessions import PROVIDERS, choose_providers, session_spec
from .faces_networks import detect, embed, gender_age
from .faces_pack import PackInfo, inspect_pack, resolve_pack

FACE_MODEL_TYPE = "VK_FACE_MODEL"
FACES_TYPE = "VK_FACES"
SELECTIONS = ("largest", "highest score", "left to right index", "all")


class FaceInputError(VisionKitError):
    """A face analysis setting or input that cannot be used; the message says what to give instead."""


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


# ------------------------------------------------------------------ loading
def check_det_size(det_size: int) -> int:
    d = int(det_size)
    if d < 64 or d > 4096 or d % 32:
        raise FaceInputError(f"det_size {det_size} is not usable: the detector input side must be a multiple of 32 "
                         "between 64 and 4096 (640 is insightface's default)")
    return d


def load_face_model(name: str, provider: str = "auto", det_size: int = 640, det_thresh: float = 0.5) -> FaceModelHandle:
    if provider not in PROVIDERS:
        raise FaceInputError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    d = check_det_size(det_size)
    t = float(det_thresh)
    if not 0.0 < t <= 1.0:
        raise FaceInputError(f"det_thresh {det_thresh} must be in (0, 1]; 0.5 is insightface's default")
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
    raise FaceInputError(f"face selection {mode!r} is not one of {', '.join(SELECTIONS)}")


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
        raise FaceInputError(f"the embeddings have different sizes ({ea.size} and {eb.size}): they come from different "
                         "recognition models, which cannot be compared; analyse both with the same pack")
    na, nb = np.linalg.norm(ea), np.linalg.norm(eb)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(ea, eb) / (na * nb))
