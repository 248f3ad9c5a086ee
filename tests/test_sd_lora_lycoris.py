"""LyCORIS LoHa and LoKr through the in-place LoRA mechanism: patched weights equal ComfyUI core's own
weight adapters (comfy.weight_adapter LoHaAdapter / LoKrAdapter.calculate_weight, run in a subprocess on the
same file and weights) and the published formulas written out here; the originals come back bit-identical;
Tucker variants are refused precisely."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from vk_testing import ROOT, import_pack, tiers
from vk_testing import tiny_sd_extras as X

import_pack()
from visionkit_pack.models.sd import lora as L  # noqa: E402
from visionkit_pack.models.core.patching import RunPatches  # noqa: E402
from visionkit_pack.models.sd.types import LoraRef  # noqa: E402

UNET_MODULES = ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
                "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
                "down_blocks.0.resnets.0.conv1", "up_blocks.1.resnets.0.conv_shortcut")


def te_modules(te):
    return [n for n, m in te.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith("layers.0.self_attn.q_proj")]


def make_file(path: Path, base, kind: str, seed: int = 3) -> dict:
    """A LyCORIS file (kohya names, fp16) for a few UNet Linear/Conv2d modules and one text-encoder projection;
    returns {file key base: (component, module name)}."""
    g = torch.Generator().manual_seed(seed)
    sd, where = {}, {}
    targets = [("unet", n) for n in UNET_MODULES] + [("text_encoder", n) for n in te_modules(base.text_encoder)]
    for i, (comp, name) in enumerate(targets):
        w = getattr(base, comp).get_submodule(name).weight
        out, rest = w.shape[0], w[0].numel()
        prefix = "lora_unet_" if comp == "unet" else "lora_te_"
        key = prefix + (name if comp == "unet" or name.startswith("text_model.") else "text_model." + name).replace(".", "_")
        r = 3
        if kind == "loha":
            sd.update({f"{key}.hada_w1_a": torch.randn(out, r, generator=g) * 0.3,
                       f"{key}.hada_w1_b": torch.randn(r, rest, generator=g) * 0.3,
                       f"{key}.hada_w2_a": torch.randn(out, r, generator=g) * 0.3,
                       f"{key}.hada_w2_b": torch.randn(r, rest, generator=g) * 0.3})
        else:  # LoKr: w1 full (o1, i1); w2 full or low-rank; out = o1 * o2, in = i1 * i2
            o1 = 4 if out % 4 == 0 else 1
            i1 = 2 if w.shape[1] % 2 == 0 else 1
            o2, i2 = out // o1, w.shape[1] // i1
            k = tuple(w.shape[2:])
            sd[f"{key}.lokr_w1"] = torch.randn(o1, i1, generator=g) * 0.3
            if i % 2:
                sd[f"{key}.lokr_w2"] = torch.randn(o2, i2, *k, generator=g) * 0.3
            else:
                sd[f"{key}.lokr_w2_a"] = torch.randn(o2, r, generator=g) * 0.3
                sd[f"{key}.lokr_w2_b"] = torch.randn(r, i2 * w[0, 0].numel(), generator=g) * 0.3  # flat, as LyCORIS
        if i != 1:  # one layer without alpha: scale 1
            sd[f"{key}.alpha"] = torch.tensor(2.0)
        where[key] = (comp, name)
    save_file({k: (v.half() if v.ndim else v) for k, v in sd.items()}, str(path))
    return where


def formula(kind: str, sd: dict, key: str, w: torch.Tensor) -> torch.Tensor:
    """ΔW from the published formulas, written out independently of the pack."""
    f = {k[len(key) + 1:]: v.float() for k, v in sd.items() if k.startswith(key + ".")}
    alpha = f["alpha"].item() if "alpha" in f else None
    if kind == "loha":
        d = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"])
        scale = alpha / f["hada_w1_b"].shape[0] if alpha is not None else 1.0
    else:
        w2 = f["lokr_w2"] if "lokr_w2" in f else torch.einsum("or,r...->o...", f["lokr_w2_a"], f["lokr_w2_b"])
        w1 = f["lokr_w1"]
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        d = torch.kron(w1, w2)
        scale = alpha / f["lokr_w2_b"].shape[0] if alpha is not None and "lokr_w2_b" in f else 1.0
    return scale * d.reshape(w.shape)


COMFY_SCRIPT = r"""
import sys
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, COMFY)
import comfy.options; comfy.options.enable_args_parsing()
import torch
from safetensors.torch import load_file, save_file
import comfy.weight_adapter as wa
lora, weights = load_file(LORA), load_file(WEIGHTS)
out = {}
for key, w in weights.items():
    alpha = lora[key + ".alpha"].item() if key + ".alpha" in lora else None
    for cls in (wa.LoHaAdapter, wa.LoKrAdapter):
        adapter = cls.load(key, lora, alpha, None)
        if adapter is not None:
            out[key] = adapter.calculate_weight(w.clone(), key, STRENGTH, 1.0, None, lambda a: a)
save_file(out, OUT)
"""


def comfy_dir() -> Path | None:
    env = os.environ.get("COMFYUI_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "comfyui"]:
        if (cand / "comfy" / "weight_adapter" / "loha.py").exists():
            return cand
    return None


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_equals_comfyui_core_and_the_formula_and_restores_exactly(pack, tmp_path, kind):
    base = X.tiny_base("sd15")
    path = tmp_path / f"{kind}.safetensors"
    where = make_file(path, base, kind)
    sd = load_file(str(path))
    lf = L.parse_lora(sd, path.name)
    assert lf.format == kind and len(lf.layers) == len(where) and L.check_fits(lf, base) == []
    originals = {k: getattr(base, c).get_parameter(f"{n}.weight").detach().clone() for k, (c, n) in where.items()}
    s = 0.8
    spec = L.lora_spec(str(path))
    with RunPatches(*base.vk_modules()) as p:
        refs = [LoraRef(spec, "sd15", s, s, path.name)]
        assert L.apply_loras(p, base, refs, "unet") + L.apply_loras(p, base, refs, "text") == len(where)
    got = {k: getattr(base, c).get_parameter(f"{n}.weight").detach().clone() for k, (c, n) in where.items()}
    for k, w in originals.items():
        want = w + s * formula(kind, sd, k, w)
        assert (got[k] - want).abs().max() < 1e-5, k
        assert (got[k] - w).abs().max() > 1e-3, k  # the layer matters
    comfy = comfy_dir()
    if comfy is None:
        tiers.missing("T2", "ComfyUI snapshot not found (COMFYUI_DIR or ../shared/comfyui): core comparison skipped")
    save_file(originals, str(tmp_path / "weights.safetensors"))
    script = COMFY_SCRIPT
    for name, value in (("COMFY", str(comfy)), ("LORA", str(path)), ("WEIGHTS", str(tmp_path / "weights.safetensors")),
                        ("OUT", str(tmp_path / "comfy.safetensors")), ("STRENGTH", s)):
        script = script.replace(name, json.dumps(value) if isinstance(value, str) else str(value))
    res = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = load_file(str(tmp_path / "comfy.safetensors"))
    assert sorted(theirs) == sorted(where)
    for k in where:
        assert (got[k] - theirs[k]).abs().max() < 1e-5, k
    with RunPatches(*base.vk_modules()) as p:  # off again: the originals, bit for bit
        L.apply_loras(p, base, [], "unet")
        L.apply_loras(p, base, [], "text")
    for k, (c, n) in where.items():
        assert torch.equal(getattr(base, c).get_parameter(f"{n}.weight"), originals[k]), k


def test_tucker_variants_and_incomplete_groups_are_refused_precisely(pack):
    t = {"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.hada_w1_b": torch.zeros(2, 2),
         "lora_unet_x.hada_w2_a": torch.zeros(2, 2), "lora_unet_x.hada_w2_b": torch.zeros(2, 2),
         "lora_unet_x.hada_t1": torch.zeros(2, 2, 3, 3), "lora_unet_x.hada_t2": torch.zeros(2, 2, 3, 3)}
    with pytest.raises(L.LoraError, match="Tucker"):
        L.parse_lora(t, "tucker.safetensors")
    half = {"lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": torch.zeros(4, 2),
            "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_b": torch.zeros(2, 8)}
    with pytest.raises(L.LoraError, match="LoHa layer without hada_w2_a"):
        L.parse_lora(half, "half.safetensors")
    lokr = {"lora_unet_down_blocks_0_resnets_0_conv1.lokr_w1": torch.zeros(2, 2)}
    with pytest.raises(L.LoraError, match="LoKr layer without lokr_w2"):
        L.parse_lora(lokr, "lokr.safetensors")
