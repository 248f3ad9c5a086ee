"""The environment ./scripts/test built: every library the nodes use imports and works together.

Each check names the package and the fix when it fails: these are the install breakages users of the
peer packs hit (mismatched torchaudio, onnxruntime vs onnxruntime-gpu, the GUI opencv next to the
headless one, basicsr (the tests' reference) on current torchvision, open_clip without its vocabulary).
"""
from __future__ import annotations

import gzip
import importlib
import importlib.metadata as md
import importlib.util
import platform
import re
import sys
from pathlib import Path

import pytest

from vk_testing import ROOT, import_pack, tiers

REINSTALL = "VISIONKIT_REINSTALL=1 ./scripts/test   (re-runs the install, then the clash fixes)"
X86_64_LINUX = sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")


def broken(package: str, problem: str, fix: str = REINSTALL):
    pytest.fail(f"BROKEN INSTALL: {package}: {problem}\n  fix: {fix}", pytrace=False)


def dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def need(module: str, package: str | None = None):
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, and the RuntimeErrors / OSErrors broken binaries raise
        broken(package or module, f"'import {module}' failed: {type(e).__name__}: {e}")


def release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def local_tag(version: str) -> str:
    return version.split("+", 1)[1] if "+" in version else ""


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


# ---------------------------------------------------------------- torch trio
def test_torch_trio_matches():
    torch = need("torch")
    tv = need("torchvision")
    tv_v, t_v = dist_version("torchvision") or tv.__version__, dist_version("torch") or torch.__version__
    # torchvision 0.(minor + 15) goes with torch 2.minor; a mismatch breaks its C++ ops
    if release(t_v)[0] == 2 and release(tv_v)[:2] != (0, release(t_v)[1] + 15):
        broken("torchvision", f"torchvision {tv_v} does not match torch {t_v}",
               "install the pair pinned in scripts/constraints.txt: " + REINSTALL)
    from torchvision.ops import nms

    try:
        nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5)
    except Exception as e:  # "operator torchvision::nms does not exist" (CPU-only torch + PyPI torchvision)
        broken("torchvision", f"its C++ ops do not load with this torch ({t_v}): {e}",
               "torch and torchvision must come from the same index, together: " + REINSTALL)
    ta_v = dist_version("torchaudio")
    if ta_v is not None:
        if release(ta_v)[:2] != release(t_v)[:2] or local_tag(ta_v) != local_tag(t_v):
            broken("torchaudio", f"torchaudio {ta_v} was built for another torch than {t_v}; transformers imports "
                   "it and then AutoImageProcessor (and diffusers' AutoencoderKL) fail",
                   "pip install -c scripts/constraints.txt torchaudio  (or pip uninstall torchaudio)")
        need("torchaudio")


def test_torch_trio_is_the_pinned_one():
    """The venv scripts/test builds has exactly the trio of scripts/constraints.txt."""
    if not (Path(sys.prefix) / ".visionkit-install-stamp").is_file():
        tiers.missing("venv", "not the environment ./scripts/test built (no .visionkit-install-stamp in sys.prefix)")
    wanted = pins()
    for name in ("torch", "torchvision", "torchaudio"):
        if name not in wanted:
            continue
        have = dist_version(name)
        if have is None or have.split("+")[0] != wanted[name].split("+")[0]:
            broken(name, f"installed {have}, scripts/constraints.txt pins {wanted[name]}")


# ---------------------------------------------------------------- libraries of the engines
def test_diffusers_and_transformers():
    need("transformers")
    try:
        from transformers import AutoImageProcessor  # noqa: F401
    except Exception as e:
        broken("transformers", f"'from transformers import AutoImageProcessor' failed: {e} "
               "(a torchaudio built for another torch does this)")
    need("diffusers")
    try:
        from diffusers import AutoencoderKL  # noqa: F401
    except Exception as e:
        broken("diffusers", f"'from diffusers import AutoencoderKL' failed: {e}")


def test_segment_anything():
    need("segment_anything", "segment-anything")
    from segment_anything import SamPredictor, sam_model_registry  # noqa: F401


def test_spandrel_loads_upscale_architectures():
    """The pack's upscale loader runs on spandrel (ComfyUI installs it too)."""
    spandrel = need("spandrel")
    ids = {str(a.architecture.id) for a in spandrel.MAIN_REGISTRY.architectures()}
    assert {"ESRGAN", "Compact", "SwinIR", "HAT"} <= ids, sorted(ids)


def test_basicsr_and_realesrgan_as_test_reference():
    """basicsr / realesrgan are only the tests' reference now (tests/requirements.txt), imported through the
    test-side torchvision stand-in (tests/vk_testing/basicsr_ref.py)."""
    from vk_testing.basicsr_ref import import_basicsr_archs, realesrganer

    try:
        RRDBNet, SRVGGNetCompact = import_basicsr_archs()
        realesrganer()
    except Exception as e:
        broken("basicsr / realesrgan", f"import through tests/vk_testing/basicsr_ref.py failed: "
               f"{type(e).__name__}: {e}", "scripts/lib/env.sh installs basicsr without build isolation, then "
               "pip install -c scripts/constraints.txt realesrgan")
    assert RRDBNet.__name__ == "RRDBNet" and SRVGGNetCompact.__name__ == "SRVGGNetCompact"


def test_insightface():
    need("insightface")
    from insightface.app import FaceAnalysis  # noqa: F401


def test_onnxruntime_runs_on_cpu():
    ort = need("onnxruntime", "onnxruntime-gpu" if X86_64_LINUX else "onnxruntime")
    providers = ort.get_available_providers()
    if "CPUExecutionProvider" not in providers:
        broken("onnxruntime", f"no CPUExecutionProvider in {providers}")
    if X86_64_LINUX:
        if dist_version("onnxruntime-gpu") is None:
            broken("onnxruntime-gpu", "not installed on x86-64 Linux (requirements.txt asks for it here)",
                   "pip install -c scripts/constraints.txt onnxruntime-gpu")
        if dist_version("onnxruntime") is not None:
            broken("onnxruntime", f"the CPU build {dist_version('onnxruntime')} is installed next to "
                   f"onnxruntime-gpu {dist_version('onnxruntime-gpu')}; both write onnxruntime/ "
                   "(insightface pulls the CPU one in)",
                   "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "
                   f"onnxruntime-gpu=={dist_version('onnxruntime-gpu')}   (./scripts/test does this before every run)")
    # a session really runs (a half-overwritten onnxruntime/ folder imports but fails here)
    import numpy as np
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": np.array([-1.0, 2.0], dtype=np.float32)})[0]
    except Exception as e:
        broken("onnxruntime", f"a one-node model does not run on CPUExecutionProvider: {e}")
    assert y.tolist() == [0.0, 2.0]


def test_open_clip_and_its_vocabulary():
    need("open_clip", "open_clip_torch")
    spec = importlib.util.find_spec("open_clip")
    vocab = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not vocab.is_file():
        broken("open_clip_torch", f"its bundled BPE vocabulary is missing: {vocab}",
               "pip install --force-reinstall --no-deps open_clip_torch")
    with gzip.open(vocab, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert len(lines) > 48894, f"{vocab} has {len(lines)} lines, the CLIP vocabulary needs 48895+"


def test_opencv_is_the_headless_build_only():
    cv2 = need("cv2", "opencv-python-headless")
    import numpy as np

    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert ok and len(buf) > 0
    headless, gui = dist_version("opencv-python-headless"), dist_version("opencv-python")
    if headless is None:
        broken("opencv-python-headless", "not installed", "pip install opencv-python-headless")
    if gui is not None:
        broken("opencv-python", f"the GUI build {gui} is installed next to opencv-python-headless {headless}; "
               "both write cv2/ (basicsr, realesrgan and insightface pull it in)",
               "pip uninstall -y opencv-python && pip install --force-reinstall --no-deps "
               f"opencv-python-headless=={headless}   (./scripts/test does this before every run)")
