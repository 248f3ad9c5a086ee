"""InsightFace nodes: the face analysis loader, Face Detect (faces, preview, mask) and Face Similarity."""
from __future__ import annotations

import numpy as np
import torch

from ..models.core import folders
from ..models.core.imageops import check_image, from_uint8, to_uint8
from ..models.core.onnx_sessions import PROVIDERS
from ..models.perception.faces import (
    FACE_MODEL_TYPE,
    FACES_TYPE,
    SELECTIONS,
    Face,
    FaceInputError,
    NoFaceError,
    analyze,
    as_faces_value,
    cosine_similarity,
    load_face_model,
    preload,
    require_faces,
    select_faces,
)
from ..models.perception.faces_draw import draw_faces, faces_mask
from ..models.perception.faces_pack import (
    FacePackMissingError,
    pack_fingerprint,
    resolve_pack,
)
from .common import CATEGORY, model_combo, to_json

NO_FACE_DETECT = ("empty result", "error")
NO_FACE_SIMILARITY = ("error", "score 0")
COMBINE = ("mean", "max", "min")
MODEL_TIP = "The face analysis pack from 'VisionKit Load Face Analysis (InsightFace)'."
SELECTION_TIP = ("Which faces of each image to keep: the largest box, the most confident detection, the index-th "
                 "face counted from the left (see index), or all of them.")
INDEX_TIP = "For 'left to right index': which face, counted from the left edge, starting at 0."


def validate_pack(name) -> bool | str:
    if name is None:  # linked: checked when the node runs
        return True
    try:
        resolve_pack(name)
    except (FacePackMissingError, folders.UnsafeModelNameError) as ex:
        return str(ex)
    return True


class VisionKitFaceAnalysisLoader:
    DESCRIPTION = ("Loads an InsightFace pack (antelopev2, buffalo_l, ...) from models/insightface/models/<pack>/: "
                   "the SCRFD face detector, the ArcFace recogniser (identity embeddings) and the gender/age model "
                   "when the pack has them; each file's role is read from its graph. Runs on ONNX Runtime "
                   "sessions kept in VisionKit's shared cache. Never downloads anything: a missing pack is an "
                   "error that says where its files go.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (FACE_MODEL_TYPE,)
    RETURN_NAMES = ("face_model",)
    OUTPUT_TOOLTIPS = ("The face analysis model, for Face Detect, Face Similarity and InstantID.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pack_name": model_combo("insightface", "The InsightFace pack: a folder of .onnx files such as "
                                                    "antelopev2 (InstantID's) or buffalo_l."),
            "provider": (list(PROVIDERS), {"default": "auto", "tooltip":
                         "Where ONNX Runtime runs the models. auto: CUDA when onnxruntime-gpu and a GPU are both "
                         "there, else the CPU. CUDA: fail clearly when it cannot be used."}),
            "det_size": ("INT", {"default": 640, "min": 64, "max": 4096, "step": 32, "tooltip":
                         "The detector's input side in pixels (a multiple of 32); the image is scaled to fit. "
                         "640 suits faces from about 20 px up; smaller is faster and finds only larger faces."}),
            "det_thresh": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                           "Minimum detection score for a face (0.5 is insightface's default). Lower finds more "
                           "(and more false) faces."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, pack_name=None):
        # Only pack_name is named: ComfyUI gives a VALIDATE_INPUTS message to every input it names, so a missing
        # pack's message would also show on det_size. det_size's range is ComfyUI's min/max check at /prompt; its
        # multiple of 32 is checked by load() when the node runs (check_det_size), before any model is read.
        return validate_pack(pack_name)

    @classmethod
    def IS_CHANGED(cls, pack_name, provider="auto", det_size=640, det_thresh=0.5):
        try:
            return pack_fingerprint(resolve_pack(pack_name))
        except Exception:  # noqa: BLE001 - any failure means "not loadable now": re-run the loader
            return "missing"

    def load(self, pack_name: str, provider: str = "auto", det_size: int = 640, det_thresh: float = 0.5):
        handle = load_face_model(pack_name, provider, det_size, det_thresh)
        preload(handle)
        return (handle,)


class VisionKitFaceDetect:
    DESCRIPTION = ("Finds faces with InsightFace: per image the selected faces (box, 5 keypoints, detection score, "
                   "identity embedding, age and gender when the pack has them), a preview with them drawn, and a "
                   "mask of their boxes. An image without a face gives an empty result, or an error naming the "
                   "image, as you choose.")
    CATEGORY = f"{CATEGORY}/faces"
    FUNCTION = "detect"
    RETURN_TYPES = (FACES_TYPE, "IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("faces", "preview", "mask", "faces_json")
    OUTPUT_TOOLTIPS = (
        "The selected faces of every image (for Face Similarity, InstantID).",
        "The images with the selected faces drawn (box, keypoints, score, gender, age); other detected faces grey.",
        "One mask per image: 1 inside the selected faces' boxes.",
        "Per image: {\"image\", \"found\", \"faces\": [{\"box\", \"score\", \"kps\", \"age\", \"gender\", …}]} in pixels.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_model": (FACE_MODEL_TYPE, {"tooltip": MODEL_TIP}),
                "image": ("IMAGE", {"tooltip": "The image(s) to find faces in; each image of a batch is analysed."}),
                "selection": (list(SELECTIONS), {"default": "largest", "tooltip": SELECTION_TIP}),
                "index": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": INDEX_TIP}),
                "if_no_face": (list(NO_FACE_DETECT), {"default": "empty result", "tooltip":
                               "When an image has no (selected) face: give it no faces and an empty mask, or stop "
                               "with an error that names the image."}),
            },
        }

    def detect(self, face_model, image, selection: str = "largest", index: int = 0, if_no_face: str = "empty result"):
        image = check_image(image)
        per_image = analyze(face_model, image)
        h, w = image.shape[1:3]
        rgb = to_uint8(image[..., :3])
        selected, previews, masks, report = [], [], [], []
        for i, found in enumerate(per_image):
            sel = select_faces(found, selection, int(index))
            if if_no_face == "error":
                require_faces(sel, i, len(found), selection, int(index))
            others = [f for f in found if not any(f is s for s in sel)]
            selected.append(sel)
            previews.append(draw_faces(rgb[i], sel, others))
            masks.append(faces_mask(h, w, sel))
            report.append({"image": i, "found": len(found), "faces": [f.to_json() for f in sel]})
        preview = from_uint8(np.stack(previews))
        mask = torch.from_numpy(np.stack(masks))
        return (as_faces_value(selected), preview, mask, to_json(report))


def _faces_value(value, label: str) -> list:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(per, (tuple, list)) and all(isinstance(f, Face) for f in per) for per in value):
        raise FaceInputError(f"faces_{label} is not a VisionKit faces value; connect the 'faces' output of "
                         "'VisionKit Face Detect'")
    return [list(per) for per in value]


class VisionKitFaceSimilarity:
    DESCRIPTION = ("How alike two faces are: the cosine similarity of their ArcFace identity embeddings (1 = the "
                   "same embedding; the same person typically scores far above different people). Compare two "
                   "images (the faces are found with the face model) or faces from Face Detect. With several "
                   "faces or images every pair is scored and combined. The result shows on the node.")
    CATEGORY = f"{CATEGORY}/faces"
    FUNCTION = "compare"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("similarity", "text", "pairs_json")
    OUTPUT_TOOLTIPS = (
        "The combined cosine similarity (-1..1) of all pairs.",
        "The result in words, with every pair.",
        ("Every pair: [{\"a\": {\"image\", \"face\", \"box\"}, \"b\": {…}, \"similarity\"}, …]; a side without a "
         "face has \"face\": null."),
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "selection": (list(SELECTIONS), {"default": "largest", "tooltip":
                              SELECTION_TIP + " Applies to image inputs; faces from Face Detect are used as given."}),
                "combine": (list(COMBINE), {"default": "mean", "tooltip":
                            "How several pairs become one number: their mean, the best (max) or the worst (min) "
                            "match. One face on each side is one pair."}),
                "if_no_face": (list(NO_FACE_SIMILARITY), {"default": "error", "tooltip":
                               "When an image has no face: stop with an error naming it, or score its pairs 0 "
                               "(useful to rate a batch of generated images)."}),
            },
            "optional": {
                "face_model": (FACE_MODEL_TYPE, {"tooltip": MODEL_TIP + " Needed when images are connected."}),
                "image_a": ("IMAGE", {"tooltip": "First image(s), e.g. the reference face."}),
                "image_b": ("IMAGE", {"tooltip": "Second image(s), e.g. the generated images."}),
                "faces_a": (FACES_TYPE, {"tooltip": "First faces, from Face Detect (instead of image_a)."}),
                "faces_b": (FACES_TYPE, {"tooltip": "Second faces, from Face Detect (instead of image_b)."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": INDEX_TIP}),
            },
        }

    def _side(self, label, face_model, image, faces, selection, index, if_no_face) -> list:
        if image is not None and faces is not None:
            raise FaceInputError(f"both image_{label} and faces_{label} are connected; connect one of them")
        if faces is not None:
            per_image = _faces_value(faces, label)
        elif image is not None:
            if face_model is None:
                raise FaceInputError(f"image_{label} needs a face_model to find its faces: connect 'VisionKit Load Face "
                                 "Analysis (InsightFace)'")
            per_image = [select_faces(found, selection, index) for found in analyze(face_model, image)]
        else:
            raise FaceInputError(f"side {label.upper()} has no input: connect image_{label} or faces_{label}")
        items = []
        for i, sel in enumerate(per_image):
            if not sel:
                if if_no_face == "error":
                    try:
                        require_faces(sel, i, 0)
                    except NoFaceError as ex:
                        raise NoFaceError(f"side {label.upper()}: {ex}") from ex
                items.append((i, None, None))
            items.extend((i, j, f) for j, f in enumerate(sel))
        if not per_image:
            items.append((0, None, None))
        return items

    def compare(self, selection="largest", combine="mean", if_no_face="error", face_model=None, image_a=None,
                image_b=None, faces_a=None, faces_b=None, index=0):
        a = self._side("a", face_model, image_a, faces_a, selection, int(index), if_no_face)
        b = self._side("b", face_model, image_b, faces_b, selection, int(index), if_no_face)
        packs = sorted({f.pack for _, _, f in a + b if f is not None})
        if len(packs) > 1:
            raise FaceInputError(f"the faces come from different packs ({', '.join(packs)}); identity embeddings of "
                             "different recognition models cannot be compared: analyse both sides with one pack")
        pairs = []
        for ia, ja, fa in a:
            for ib, jb, fb in b:
                sim = cosine_similarity(fa, fb) if fa is not None and fb is not None else 0.0
                pairs.append({"a": _where(ia, ja, fa), "b": _where(ib, jb, fb), "similarity": round(sim, 6)})
        values = [p["similarity"] for p in pairs]
        value = float({"mean": np.mean, "max": np.max, "min": np.min}[combine](values))
        text = _similarity_text(value, combine, pairs)
        return {"ui": {"text": [text]}, "result": (value, text, to_json(pairs))}


def _where(image: int, face, f) -> dict:
    return {"image": image, "face": face, "box": None if f is None else [round(float(v), 1) for v in f.bbox]}


def _similarity_text(value: float, combine: str, pairs: list, show: int = 20) -> str:
    how = "one pair" if len(pairs) == 1 else f"{combine} of {len(pairs)} pairs"
    lines = [f"face similarity {value:.4f} ({how}; cosine of ArcFace embeddings, 1 = identical)"]
    if len(pairs) > 1 or pairs[0]["a"]["face"] is None or pairs[0]["b"]["face"] is None:
        for p in pairs[:show]:
            sides = []
            for k in ("a", "b"):
                s = p[k]
                sides.append(f"{k.upper()} image {s['image']} " + ("no face" if s["face"] is None else f"face {s['face']}"))
            lines.append(f"  {sides[0]} × {sides[1]}: {p['similarity']:.4f}")
        if len(pairs) > show:
            lines.append(f"  … {len(pairs) - show} more pairs in pairs_json")
    return "\n".join(lines)
