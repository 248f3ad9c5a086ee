"""InsightFace: faces equal to insightface's FaceAnalysis on the tiny packs, the shared cache, pack errors, nodes.

Reference: `insightface.app.FaceAnalysis(name=<pack>, root=<models>/insightface, providers=[CPU],
allowed_modules=[detection, recognition, genderage])` with `prepare(ctx_id=-1, det_size=...)`, on the same
tiny ONNX packs (tests/vk_testing/tiny_faces.py) and the same pixels.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from vk_testing import import_pack, netguard
from vk_testing.tiny_faces import scene

import_pack()
from visionkit_pack.models.perception import faces as F
from visionkit_pack.models.perception import faces_networks as FN
from visionkit_pack.models.perception import faces_pack as FP
from visionkit_pack.models.core import folders
from visionkit_pack.models.core.cache import get_cache
from visionkit_pack.models.perception.faces_draw import faces_mask

REF_TASKS = ["detection", "recognition", "genderage"]


def as_image(*bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([b[..., ::-1] for b in bgr]).copy()).float() / 255.0


_REFS: dict = {}


def reference(models_dir, pack: str, det_size: int, det_thresh: float = 0.5):
    from insightface.app import FaceAnalysis

    key = (str(models_dir), pack)
    if key not in _REFS:
        _REFS[key] = FaceAnalysis(name=pack, root=str(models_dir / "insightface"), providers=["CPUExecutionProvider"],
                                  allowed_modules=REF_TASKS)
    fa = _REFS[key]
    fa.prepare(ctx_id=-1, det_size=(det_size, det_size), det_thresh=det_thresh)
    return fa


def ref_faces(fa, bgr: np.ndarray) -> list:
    with warnings.catch_warnings():  # skimage's FutureWarning inside insightface's alignment
        warnings.simplefilter("ignore", FutureWarning)
        return fa.get(bgr)


def assert_same_faces(got: list, ref: list, with_genderage: bool) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.bbox, r.bbox, rtol=0, atol=1e-4)
        np.testing.assert_allclose(g.kps, r.kps, rtol=0, atol=1e-4)
        assert g.bbox.dtype == np.float32 and g.kps.shape == (5, 2) and g.kps.dtype == np.float32
        assert abs(g.det_score - float(r.det_score)) < 1e-6
        assert g.embedding is not None and g.embedding.dtype == np.float32 and g.embedding.shape == r.embedding.shape
        np.testing.assert_allclose(g.embedding, r.embedding, rtol=0, atol=1e-6 * float(np.abs(r.embedding).max()))
        assert F.cosine_similarity(g, r.embedding) > 0.99999
        if with_genderage:
            assert (g.age, g.gender) == (r.age, r.sex)
        else:
            assert g.age is None and g.gender is None and r.get("age") is None


@pytest.mark.parametrize("pack_name, det_size, shape", [
    ("tiny_buffalo", 160, (120, 160)),
    ("tiny_buffalo", 128, (160, 120)),
    ("tiny_antelope", 160, (160, 120)),
    ("tiny_antelope", 256, (120, 160)),
])
def test_faces_equal_insightface_face_analysis(pack, models_dir, pack_name, det_size, shape):
    imgs = [scene(1, *shape), scene(2, *shape), np.zeros((*shape, 3), np.uint8)]
    handle = F.load_face_model(pack_name, "CPU", det_size, 0.5)
    got = F.analyze(handle, as_image(*imgs))
    fa = reference(models_dir, pack_name, det_size)
    assert len(got) == 3
    for i, img in enumerate(imgs):
        ref = ref_faces(fa, img)
        assert_same_faces(got[i], ref, with_genderage=pack_name == "tiny_buffalo")
        assert all(f.image_index == i and f.image_size == shape and f.pack == pack_name for f in got[i])
    assert len(got[0]) >= 2 and len(got[1]) >= 1  # the comparison was about real faces
    assert got[2] == []  # the black image: nothing passes the threshold, in both


def test_threshold_no_face_path_equals_reference(pack, models_dir):
    img = scene(1)
    handle = F.load_face_model("tiny_buffalo", "CPU", 160, 0.999)
    assert F.analyze(handle, as_image(img)) == [[]]
    assert ref_faces(reference(models_dir, "tiny_buffalo", 160, 0.999), img) == []
    assert len(F.analyze(F.load_face_model("tiny_buffalo", "CPU", 160, 0.5), as_image(img))[0]) > 0


def test_alignment_matrices_equal_insightface():
    from insightface.utils import face_align

    rng = np.random.default_rng(3)
    for size in (112, 128, 224):
        kps = (FN.ARCFACE_DST * rng.uniform(0.5, 3.0) + rng.uniform(-20, 80, 2)).astype(np.float32)
        kps += rng.normal(0, 2, kps.shape).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ref = face_align.estimate_norm(kps, size)
        np.testing.assert_allclose(FN.arcface_matrix(kps, size), ref, rtol=0, atol=1e-9)
        bbox = np.array([10.3, 20.7, 60.1, 95.2], np.float32) * rng.uniform(0.5, 2)
        w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
        scale = 96 / (max(w, h) * 1.5)
        _, ref_m = face_align.transform(np.zeros((4, 4, 3), np.uint8), ((bbox[2] + bbox[0]) / 2, (bbox[3] + bbox[1]) / 2),
                                        96, scale, 0)
        np.testing.assert_array_equal(FN.genderage_matrix(bbox, 96), ref_m)


def test_sessions_live_in_the_shared_cache(pack, models_dir):
    handle = F.load_face_model("tiny_buffalo", "CPU", 160)
    F.analyze(handle, as_image(scene(1)))
    entries = [e for e in get_cache().entries() if e["kind"] == "onnx"]
    assert sorted(os.path.basename(e["path"]) for e in entries) == ["det_10g.onnx", "genderage.onnx", "w600k_r50.onnx"]
    F.analyze(handle, as_image(scene(2)))
    again = [e for e in get_cache().entries() if e["kind"] == "onnx"]
    assert len(again) == 3 and all(e["hits"] >= 1 for e in again)
    get_cache().purge()
    assert len(get_cache()) == 0
    assert len(F.analyze(handle, as_image(scene(1)))[0]) > 0  # reloaded on demand


def test_pack_inspection(pack, models_dir):
    base = models_dir / "insightface" / "models"
    buf = FP.inspect_pack(str(base / "tiny_buffalo"))
    assert {t: os.path.basename(i.path) for t, i in buf.files.items()} == {
        "detection": "det_10g.onnx", "recognition": "w600k_r50.onnx", "genderage": "genderage.onnx"}
    assert buf.ignored == (("2d106det.onnx", "landmark"),)
    assert not buf.files["recognition"].mxnet_norm and not buf.files["genderage"].mxnet_norm
    ant = FP.inspect_pack(str(base / "tiny_antelope"))
    assert ant.files["recognition"].mxnet_norm and ant.files["recognition"].input_hw == (128, 128)
    assert set(FP.inspect_pack(str(base / "tiny_detonly")).files) == {"detection"}
    assert "antelope_nested/antelope_nested" in folders.list_models("insightface")


def test_missing_pack_names_folder_and_files_and_never_downloads(pack, models_dir):
    before = list(netguard.attempts)
    where = str(models_dir / "insightface" / "models")
    with pytest.raises(FP.FacePackMissingError) as ei:
        F.load_face_model("antelopev2")
    msg = str(ei.value)
    assert isinstance(ei.value, folders.ModelNotFoundError)
    assert os.path.join(where, "antelopev2") in msg
    for f in FP.KNOWN_PACKS["antelopev2"]:
        assert f in msg
    assert "never downloads" in msg and "tiny_buffalo" in msg
    msg = str(pytest.raises(FP.FacePackMissingError, F.load_face_model, "antelope_nested").value)
    assert "one folder deeper (antelope_nested/antelope_nested)" in msg
    assert "det_10g.onnx" in str(pytest.raises(FP.FacePackMissingError, F.load_face_model, "my_pack").value)
    loader = pack.NODE_CLASS_MAPPINGS["VisionKitFaceAnalysisLoader"]
    assert "scrfd_10g_bnkps.onnx" in loader.VALIDATE_INPUTS(pack_name="antelopev2")
    assert "leave its model folder" in loader.VALIDATE_INPUTS(pack_name="../tiny_buffalo")
    with pytest.raises(folders.ModelNotFoundError, match="glintr100.onnx"):
        loader().load("antelopev2")
    assert netguard.attempts == before


def _mini_pack(root, name: str, files: dict) -> None:
    d = root / "insightface" / "models" / name
    d.mkdir(parents=True)
    for n, src in files.items():
        if isinstance(src, bytes):
            (d / n).write_bytes(src)
        else:
            shutil.copy(src, d / n)


def test_unusable_packs_are_explained(pack, models_dir, tmp_path, monkeypatch):
    from vk_testing.tiny_faces import TinySCRFD, _export

    base = models_dir / "insightface" / "models"

    class NoKps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.det = TinySCRFD(False, 1)

        def forward(self, x):
            return self.det(x)[:6]

    nokps = tmp_path / "nokps.onnx"
    _export(NoKps(), (64, 64), nokps, [f"o{i}" for i in range(6)], dynamic_hw=True)
    _mini_pack(tmp_path, "rec_only", {"w600k_r50.onnx": base / "tiny_buffalo" / "w600k_r50.onnx"})
    _mini_pack(tmp_path, "no_kps", {"det.onnx": nokps})
    _mini_pack(tmp_path, "manifest", {"det_10g.onnx": base / "tiny_buffalo" / "det_10g.onnx", "manifest.json": b"{}"})
    _mini_pack(tmp_path, "broken", {"det_10g.onnx": b"not an onnx graph"})
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(FP.FacePackError, match="no face detector.*w600k_r50.onnx"):
        F.load_face_model("rec_only")
    with pytest.raises(FP.FacePackError, match="no keypoint outputs"):
        F.load_face_model("no_kps")
    with pytest.raises(FP.FacePackError, match="manifest package"):
        F.load_face_model("manifest")
    with pytest.raises(FP.FacePackError, match="det_10g.onnx .*not a readable .onnx file"):
        F.load_face_model("broken")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(models_dir))
    with pytest.raises(F.FaceInputError, match="multiple of 32"):
        F.load_face_model("tiny_buffalo", det_size=100)
    with pytest.raises(F.FaceInputError, match="det_thresh"):
        F.load_face_model("tiny_buffalo", det_thresh=0)
    with pytest.raises(ValueError, match="not one of"):
        F.load_face_model("tiny_buffalo", provider="TPU")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA provider was asked for"):
            F.load_face_model("tiny_buffalo", provider="CUDA")


def _face(x0, y0, x1, y1, score, emb=None, pack="p"):
    return F.Face(bbox=np.array([x0, y0, x1, y1], np.float32), kps=np.zeros((5, 2), np.float32), det_score=score,
                  embedding=None if emb is None else np.asarray(emb, np.float32), pack=pack)


def test_select_faces_and_cosine():
    a, b, c = _face(50, 0, 60, 10, 0.9), _face(0, 0, 30, 30, 0.6), _face(20, 5, 40, 25, 0.95)
    faces = [a, b, c]
    assert F.select_faces(faces, "largest") == [b]
    assert F.select_faces(faces, "highest score") == [c]
    assert [F.select_faces(faces, "left to right index", i) for i in range(4)] == [[b], [c], [a], []]
    assert F.select_faces(faces, "all") == faces and F.select_faces([], "largest") == []
    with pytest.raises(F.FaceInputError, match="not one of"):
        F.select_faces(faces, "smallest")
    with pytest.raises(F.NoFaceError, match="no face was found in image 2 .*batch index 2.*empty result"):
        F.require_faces([], 2, 0)
    with pytest.raises(F.NoFaceError, match="image 1 .* has 3 face.*index 5"):
        F.require_faces([], 1, 3, "left to right index", 5)
    e1, e2 = _face(0, 0, 1, 1, 1, [1, 0, 0]), _face(0, 0, 1, 1, 1, [1, 1, 0])
    assert F.cosine_similarity(e1, e2) == pytest.approx(1 / np.sqrt(2))
    assert F.cosine_similarity(e1, np.array([3.0, 0, 0])) == pytest.approx(1.0)
    np.testing.assert_allclose(e2.normed_embedding, [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)
    with pytest.raises(F.NoRecognitionError, match="pack 'detpack' has no recognition model"):
        F.cosine_similarity(e1, _face(0, 0, 1, 1, 1, pack="detpack"))
    with pytest.raises(F.FaceInputError, match="different sizes"):
        F.cosine_similarity(e1, np.ones(4))


# ------------------------------------------------------------------ nodes
def _nodes(pack):
    m = pack.NODE_CLASS_MAPPINGS
    return m["VisionKitFaceAnalysisLoader"](), m["VisionKitFaceDetect"](), m["VisionKitFaceSimilarity"]()


def test_node_metadata(pack):
    m, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert names["VisionKitFaceAnalysisLoader"] == "VisionKit Load Face Analysis (InsightFace)"
    assert names["VisionKitFaceDetect"] == "VisionKit Face Detect"
    assert names["VisionKitFaceSimilarity"] == "VisionKit Face Similarity"
    assert m["VisionKitFaceAnalysisLoader"].CATEGORY == "VisionKit/loaders"
    assert m["VisionKitFaceDetect"].CATEGORY == m["VisionKitFaceSimilarity"].CATEGORY == "VisionKit/faces"
    assert m["VisionKitFaceSimilarity"].OUTPUT_NODE is True
    for cls in (m["VisionKitFaceAnalysisLoader"], m["VisionKitFaceDetect"], m["VisionKitFaceSimilarity"]):
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (typ, *opts) in group.items():
                assert opts and opts[0].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and cls.DESCRIPTION
    packs = m["VisionKitFaceAnalysisLoader"].INPUT_TYPES()["required"]["pack_name"][0]
    assert {"tiny_buffalo", "tiny_antelope", "tiny_detonly"} <= set(packs)
    assert m["VisionKitFaceAnalysisLoader"].VALIDATE_INPUTS(pack_name="tiny_buffalo") is True
    # det_size: ComfyUI's min/max at /prompt; the multiple of 32 when the loader runs, before any model is read
    det = m["VisionKitFaceAnalysisLoader"].INPUT_TYPES()["required"]["det_size"][1]
    assert (det["min"], det["max"]) == (64, 4096)
    with pytest.raises(ValueError, match="multiple of 32"):
        m["VisionKitFaceAnalysisLoader"]().load("tiny_buffalo", "auto", 650, 0.5)


def test_loader_fingerprint_follows_the_pack_files(pack, models_dir, tmp_path, monkeypatch):
    _mini_pack(tmp_path, "copy", {"det_10g.onnx": models_dir / "insightface/models/tiny_buffalo/det_10g.onnx"})
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(tmp_path))
    loader = pack.NODE_CLASS_MAPPINGS["VisionKitFaceAnalysisLoader"]
    f1 = loader.IS_CHANGED("copy")
    assert f1 == loader.IS_CHANGED("copy", "CPU", 320, 0.4) and f1 != "missing"
    det = tmp_path / "insightface/models/copy/det_10g.onnx"
    st = os.stat(det)
    os.utime(det, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert loader.IS_CHANGED("copy") != f1
    assert loader.IS_CHANGED("gone") == "missing"
    (h,) = loader().load("copy", "CPU", 320, 0.4)
    assert h == F.FaceModelHandle("copy", str(tmp_path / "insightface/models/copy"), "CPU", 320, 0.4)
    assert [os.path.basename(e["path"]) for e in get_cache().entries()] == ["det_10g.onnx"]  # preloaded


def test_face_detect_node(pack, models_dir):
    loader, detect, _ = _nodes(pack)
    (fm,) = loader.load("tiny_buffalo", "CPU", 160, 0.5)
    imgs = [scene(1), scene(2), np.zeros((120, 160, 3), np.uint8)]
    image = as_image(*imgs)
    every = F.analyze(fm, image)
    faces, preview, mask, js = detect.detect(fm, image, "all", 0, "empty result")
    assert preview.shape == (3, 120, 160, 3) and preview.dtype == torch.float32
    assert mask.shape == (3, 120, 160) and mask.dtype == torch.float32
    assert isinstance(faces, tuple) and [len(f) for f in faces] == [len(f) for f in every]
    assert faces[2] == () and mask[2].sum() == 0 and torch.equal(preview[2], image[2])
    report = json.loads(js)
    assert [r["found"] for r in report] == [len(f) for f in every] and report[0]["faces"][0]["box"]
    for i in (0, 1):  # the mask is the union of the boxes, the preview differs from the image only near them
        expect = torch.from_numpy(np.stack([faces_mask(120, 160, [f]) for f in faces[i]]).max(0))
        assert torch.equal(mask[i], expect) and mask[i].sum() > 0
        assert not torch.equal(preview[i], image[i])
    big, *_ = detect.detect(fm, image, "largest", 0, "empty result")
    assert [len(f) for f in big] == [1, 1, 0]
    assert big[0][0].area == max(f.area for f in every[0])
    best, *_ = detect.detect(fm, image, "highest score", 0, "empty result")
    assert best[1][0].det_score == max(f.det_score for f in every[1])
    second, *_ = detect.detect(fm, image, "left to right index", 1, "empty result")
    assert second[0][0].bbox[0] == sorted(float(f.bbox[0]) for f in every[0])[1]
    with pytest.raises(F.NoFaceError, match="no face was found in image 2 of the batch"):
        detect.detect(fm, image, "largest", 0, "error")
    with pytest.raises(F.NoFaceError, match="image 0 .* has .* face.*index 999"):
        detect.detect(fm, image[:1], "left to right index", 999, "error")
    ok, *_ = detect.detect(fm, image[:2], "largest", 0, "error")
    assert [len(f) for f in ok] == [1, 1]
    rgba = torch.cat([image[:1], torch.rand(1, 120, 160, 1)], dim=-1)  # alpha is ignored
    with_alpha, prev_a, *_ = detect.detect(fm, rgba, "all", 0, "empty result")
    assert prev_a.shape == (1, 120, 160, 3)
    np.testing.assert_array_equal([f.bbox for f in with_alpha[0]], [f.bbox for f in faces[0]])


def test_progress_per_image(pack):
    from visionkit_pack.models.core import host

    calls = []
    handle = F.load_face_model("tiny_antelope", "CPU", 128)
    F.analyze(handle, as_image(scene(1), scene(2), scene(3)), host.Progress(3, lambda d, t: calls.append((d, t))))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_face_similarity_node(pack, models_dir):
    loader, detect, sim = _nodes(pack)
    (fm,) = loader.load("tiny_buffalo", "CPU", 160, 0.5)
    a, b = as_image(scene(1)), as_image(scene(2))
    out = sim.compare("largest", "mean", "error", face_model=fm, image_a=a, image_b=a)
    value, text, pairs = out["result"]
    assert value == pytest.approx(1.0, abs=1e-5)
    assert out["ui"]["text"] == [text] and text.startswith("face similarity 1.0000 (one pair")
    assert len(json.loads(pairs)) == 1
    # faces from Face Detect, several per side: every pair, combined
    fa, *_ = detect.detect(fm, a, "all", 0, "empty result")
    fb, *_ = detect.detect(fm, b, "all", 0, "empty result")
    res = {c: sim.compare("all", c, "error", faces_a=fa, faces_b=fb)["result"] for c in ("mean", "max", "min")}
    expect = [F.cosine_similarity(x, y) for x in fa[0] for y in fb[0]]
    got = json.loads(res["mean"][2])
    assert len(got) == len(expect) > 1
    np.testing.assert_allclose([p["similarity"] for p in got], expect, atol=1e-6)
    assert res["mean"][0] == pytest.approx(np.mean(expect), abs=1e-5)
    assert res["max"][0] == pytest.approx(max(expect), abs=1e-5) and res["min"][0] == pytest.approx(min(expect), abs=1e-5)
    assert "A image 0 face 0 × B image 0 face 1" in res["mean"][1]
    # no face: an error naming the side and image, or pairs scored 0
    black = as_image(np.zeros((120, 160, 3), np.uint8))
    with pytest.raises(F.NoFaceError, match="side B: no face was found in image 0"):
        sim.compare("largest", "mean", "error", face_model=fm, image_a=a, image_b=black)
    zero = sim.compare("largest", "mean", "score 0", face_model=fm, image_a=a, image_b=torch.cat([a, black]))
    assert zero["result"][0] == pytest.approx(0.5, abs=1e-5) and "B image 1 no face" in zero["result"][1]
    # inputs that cannot work say so
    with pytest.raises(ValueError, match="needs a face_model"):
        sim.compare(image_a=a, image_b=a)
    with pytest.raises(ValueError, match="side B has no input"):
        sim.compare(face_model=fm, image_a=a)
    with pytest.raises(ValueError, match="both image_a and faces_a"):
        sim.compare(face_model=fm, image_a=a, faces_a=fa, image_b=a)
    with pytest.raises(ValueError, match="not a VisionKit faces value"):
        sim.compare(faces_a=[[1, 2]], faces_b=fb)
    (ant,) = loader.load("tiny_antelope", "CPU", 160, 0.5)
    with pytest.raises(ValueError, match="different packs"):
        sim.compare(face_model=ant, image_a=a, faces_b=fb)


def test_pack_without_recogniser(pack, models_dir):
    loader, detect, sim = _nodes(pack)
    (fm,) = loader.load("tiny_detonly", "CPU", 160, 0.5)
    faces, _, mask, _ = detect.detect(fm, as_image(scene(1)), "largest", 0, "empty result")
    assert len(faces[0]) == 1 and faces[0][0].embedding is None and mask.sum() > 0
    with pytest.raises(F.NoRecognitionError, match="pack 'tiny_detonly' has no recognition model"):
        sim.compare(faces_a=faces, faces_b=faces)
