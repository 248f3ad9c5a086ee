"""LyCORIS LoHa and LoKr layers: parsed into lora_formats.LoraLayer and turned into ΔW for the same in-place mechanism.

Keys (kohya-style names, as LyCORIS and ComfyUI write them): `<base>.hada_w1_a/.hada_w1_b/.hada_w2_a/.hada_w2_b`
(+ `.alpha`), `<base>.lokr_w1` or `.lokr_w1_a/.lokr_w1_b`, `<base>.lokr_w2` or `.lokr_w2_a/.lokr_w2_b` (+ `.alpha`).
The published formulas (LyCORIS' paper and code, the same in ComfyUI core):
- LoHa: ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / rank, rank = w1_b's first dimension (no alpha: scale 1);
- LoKr: ΔW = kron(w1, w2), each either given or the product of its low-rank pair; scale alpha / rank where a
  low-rank pair gives the rank (w2's when both do), else 1. A 4-D w2 (conv) takes w1 as (o1, i1, 1, 1).
Tucker/CP variants (`hada_t1`, `lokr_t2`) are refused by lora_formats with a message saying so.
"""
from __future__ import annotations

import torch

LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
ROLES = LOHA + LOKR


def kind_of(group: dict) -> str | None:
    """'loha' / 'lokr' for a key group holding LyCORIS weights, None for a plain LoRA group."""
    if any(r in group for r in LOHA):
        return "loha"
    if any(r in group for r in LOKR):
        return "lokr"
    return None


def _f(t: torch.Tensor, dev=None) -> torch.Tensor:
    return t.to(device=dev, dtype=torch.float32)


def check_group(kind: str, g: dict, where: str) -> str | None:
    """What is missing or inconsistent in a LoHa/LoKr key group (None = usable)."""
    if kind == "loha":
        missing = [r for r in LOHA if r not in g]
        if missing:
            return f"{where} is a LoHa layer without {', '.join(missing)}"
        if g["hada_w1_a"].ndim != 2 or g["hada_w1_b"].ndim != 2 or g["hada_w1_a"].shape[1] != g["hada_w1_b"].shape[0] \
                or g["hada_w2_a"].shape[0] != g["hada_w1_a"].shape[0] or g["hada_w2_b"].shape[-1] != g["hada_w1_b"].shape[-1]:
            return f"{where}: the LoHa weights do not pair up (damaged file?)"
        return None
    for n in ("1", "2"):
        if f"lokr_w{n}" not in g and not (f"lokr_w{n}_a" in g and f"lokr_w{n}_b" in g):
            return f"{where} is a LoKr layer without lokr_w{n} (or lokr_w{n}_a and lokr_w{n}_b)"
    return None


def scale_of(kind: str, g: dict) -> float:
    alpha = float(g["alpha"].float().reshape(-1)[0]) if "alpha" in g else None
    if alpha is None:
        return 1.0
    if kind == "loha":
        return alpha / int(g["hada_w1_b"].shape[0])
    dim = None
    if "lokr_w1" not in g:
        dim = int(g["lokr_w1_b"].shape[0])
    if "lokr_w2" not in g:
        dim = int(g["lokr_w2_b"].shape[0])
    return alpha / dim if dim else 1.0


def factors(kind: str, g: dict) -> dict:
    return {r: g[r] for r in (LOHA if kind == "loha" else LOKR) if r in g}


def _w(f: dict, n: str, dev) -> torch.Tensor:
    if f"lokr_w{n}" in f:
        return _f(f[f"lokr_w{n}"], dev)
    a, b = _f(f[f"lokr_w{n}_a"], dev), _f(f[f"lokr_w{n}_b"], dev)
    out = a @ b.flatten(1)
    return out.reshape(a.shape[0], *b.shape[1:]) if b.ndim == 4 else out


def shape_of(kind: str, f: dict) -> tuple[int, int, int]:
    """(out, in channels, in · kernel numel) of the weight the layer changes."""
    if kind == "loha":
        return int(f["hada_w1_a"].shape[0]), int(f["hada_w1_b"].shape[1]), int(f["hada_w1_b"].shape[1])

    def dims(n):
        if f"lokr_w{n}" in f:
            w = f[f"lokr_w{n}"]
            return int(w.shape[0]), int(w.shape[1]), int(w[0].numel())
        a, b = f[f"lokr_w{n}_a"], f[f"lokr_w{n}_b"]
        return int(a.shape[0]), int(b.shape[1]), int(b[0].numel())

    (o1, i1, n1), (o2, i2, n2) = dims("1"), dims("2")
    return o1 * o2, i1 * i2, n1 * n2


def delta(kind: str, f: dict, weight: torch.Tensor) -> torch.Tensor:
    """Unscaled float32 ΔW of a LoHa / LoKr layer on the weight's device, flat (out, numel / out)."""
    dev = weight.device
    if kind == "loha":
        m1 = _f(f["hada_w1_a"], dev) @ _f(f["hada_w1_b"], dev)
        m2 = _f(f["hada_w2_a"], dev) @ _f(f["hada_w2_b"], dev).flatten(1)
        return m1 * m2
    w1, w2 = _w(f, "1", dev), _w(f, "2", dev)
    if w2.ndim == 4:
        w1 = w1.reshape(*w1.shape[:2], 1, 1)
    d = torch.kron(w1, w2)
    return d.reshape(d.shape[0], -1)
