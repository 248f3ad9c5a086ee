"""Tiny InsightFace-shaped ONNX packs, exported from torch, for the face tests.

insightface decides what an .onnx file is from its graph alone (model_zoo.ModelRouter): 5 or more
outputs = SCRFD detector (9 outputs: scores, box distances and 5 keypoints for strides 8/16/32, 2
anchors per cell), input 192×192 = landmarks, 96×96 = gender/age, square input of at least 112 that
16 divides = ArcFace recogniser. The tiny models have exactly those shapes, so insightface's own
FaceAnalysis loads them and serves as the reference.

The detector is designed, not random: every stride averages the normalised image over its cells; the
score logit is 8·mean − 4 (plus a small seeded 1×1 convolution), so cells fully inside a bright blob
score ≈ 0.98 and dark cells ≈ 0: a bright square on black gives confident faces, a black image none.
Box distances (1.5–2 strides) and keypoints (a face-like pattern around the cell centre) also get
small seeded convolutions, so every output depends on the pixels.

Packs under insightface/models/:
- tiny_buffalo:  det_10g.onnx (2-D outputs, as the real packs), w600k_r50.onnx (ArcFace 112, normalised
  outside the graph: mean 127.5 / std 127.5), genderage.onnx (96×96 → 3), 2d106det.onnx (192×192
  landmarks, which VisionKit does not use);
- tiny_antelope: scrfd_10g_bnkps.onnx (batched 3-D outputs), glintr100.onnx (ArcFace 128 whose
  graph normalises its input itself; its first nodes are named as insightface's mxnet check expects, so
  insightface feeds it raw pixels);
- tiny_detonly:  a detector alone (no recogniser: faces come without embeddings);
- antelope_nested/antelope_nested: a pack unzipped one level too deep (the listing shows the
  inner folder).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .tiny_models import builder


def scene(seed: int, h: int = 120, w: int = 160):
    """BGR uint8 (h, w, 3): bright textured squares ("faces" for the tiny detector) on black."""
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    for _ in range(3):
        s = int(rng.integers(min(h, w) // 5, min(h, w) // 2))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        img[y:y + s, x:x + s] = rng.integers(150, 256, 3)
    noise = rng.integers(-30, 30, img.shape) * (img > 0)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)

STRIDES = (8, 16, 32)
ANCHORS = 2
EMBEDDING_DIM = 32  # the tiny recognisers' embedding size (real ArcFace: 512)
# the 5 keypoints (left eye, right eye, nose, left/right mouth corner) in strides from the cell centre
KPS_PATTERN = ((-0.6, -0.45), (0.6, -0.45), (0.0, 0.1), (-0.5, 0.6), (0.5, 0.6))


class TinySCRFD(nn.Module):
    def __init__(self, batched: bool, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.batched = batched
        self.score = nn.ModuleList(nn.Conv2d(3, ANCHORS, 1) for _ in STRIDES)
        self.box = nn.ModuleList(nn.Conv2d(3, 4 * ANCHORS, 1) for _ in STRIDES)
        self.kps = nn.ModuleList(nn.Conv2d(3, 10 * ANCHORS, 1) for _ in STRIDES)
        with torch.no_grad():
            for m in list(self.score) + list(self.box) + list(self.kps):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.zero_()
        self.register_buffer("kps_base", torch.tensor(KPS_PATTERN).flatten().repeat(ANCHORS).view(1, -1, 1, 1))

    def _flat(self, t: torch.Tensor, width: int) -> torch.Tensor:
        # (1, A*width, h, w) -> (h*w*A, width): anchors of one cell consecutive, cells row by row
        t = t.permute(0, 2, 3, 1).reshape(-1, width)
        return t.unsqueeze(0) if self.batched else t

    def forward(self, x):
        scores, boxes, kpss = [], [], []
        for i, s in enumerate(STRIDES):
            f = nn.functional.avg_pool2d(x, s, s)
            logit = 8.0 * f.mean(dim=1, keepdim=True) - 4.0 + self.score[i](f)
            scores.append(self._flat(torch.sigmoid(logit), 1))
            boxes.append(self._flat(1.5 + 0.5 * torch.sigmoid(self.box[i](f)), 4))
            kpss.append(self._flat(self.kps_base + 0.15 * torch.tanh(self.kps[i](f)), 10))
        return tuple(scores + boxes + kpss)


class TinyEmbedder(nn.Module):
    """ArcFace-shaped (size 112/128 → dim) or genderage-shaped (96 → 3) head."""

    def __init__(self, size: int, dim: int, seed: int, normalise_inside: bool = False, genderage: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.normalise_inside = normalise_inside
        self.genderage = genderage
        self.conv = nn.Conv2d(3, 6, 8, stride=8)
        self.fc = nn.Linear(6 * (size // 16) ** 2, dim)

    def forward(self, x):
        if self.normalise_inside:  # the mxnet-converted packs: raw 0..255 pixels in
            x = (x - 127.5) * 0.0078125
        y = nn.functional.avg_pool2d(torch.relu(self.conv(x)), 2)
        y = self.fc(y.flatten(1))
        if self.genderage:  # real genderage: 2 gender logits and age / 100
            y = torch.cat([y[:, :2], torch.sigmoid(y[:, 2:3])], dim=1)
        return y


def _export(model: nn.Module, size, path: Path, outputs: list[str], dynamic_hw: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.zeros(1, 3, h, w)
    axes = {"input.1": {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}}
    for o in outputs:
        axes[o] = {0: "n"} if dynamic_hw else {0: "batch"}
    if dynamic_hw and getattr(model, "batched", False):
        for o in outputs:
            axes[o] = {1: "n"}
    with torch.no_grad():
        torch.onnx.export(model, x, str(path), input_names=["input.1"], output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _mxnet_names(path: Path) -> None:
    """Name the graph's first Sub / Mul nodes as mxnet-converted insightface models do ('Sub…', 'Mul…')."""
    import onnx

    m = onnx.load(str(path))
    for i, node in enumerate(m.graph.node[:8]):
        if node.op_type in ("Sub", "Mul"):
            node.name = f"{node.op_type}{i}"
    assert {n.op_type for n in m.graph.node[:8]} >= {"Sub", "Mul"}
    onnx.save(m, str(path))


def write_detector(path: Path, batched: bool, seed: int) -> None:
    outs = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in STRIDES]
    _export(TinySCRFD(batched, seed), (128, 160), path, outs, dynamic_hw=True)


def write_recogniser(path: Path, size: int, seed: int, dim: int = EMBEDDING_DIM, normalise_inside: bool = False) -> None:
    _export(TinyEmbedder(size, dim, seed, normalise_inside), size, path, ["fc1"])
    if normalise_inside:
        _mxnet_names(path)


def write_genderage(path: Path, seed: int) -> None:
    _export(TinyEmbedder(96, 3, seed, genderage=True), 96, path, ["fc1"])


def write_landmark(path: Path, seed: int) -> None:
    _export(TinyEmbedder(192, 212, seed), 192, path, ["fc1"])


@builder
def insightface_packs(root: Path) -> None:
    base = root / "insightface" / "models"
    buf = base / "tiny_buffalo"
    write_detector(buf / "det_10g.onnx", batched=False, seed=71)
    write_recogniser(buf / "w600k_r50.onnx", 112, seed=72)
    write_genderage(buf / "genderage.onnx", seed=73)
    write_landmark(buf / "2d106det.onnx", seed=74)
    ant = base / "tiny_antelope"
    write_detector(ant / "scrfd_10g_bnkps.onnx", batched=True, seed=75)
    write_recogniser(ant / "glintr100.onnx", 128, seed=76, normalise_inside=True)
    write_detector(base / "tiny_detonly" / "det_10g.onnx", batched=False, seed=71)
    nested = base / "antelope_nested" / "antelope_nested"
    write_detector(nested / "scrfd_10g_bnkps.onnx", batched=True, seed=75)
    write_recogniser(nested / "glintr100.onnx", 128, seed=76, normalise_inside=True)
