"""Safe weights loading (safetensors or weights-only torch.load); upscaling no longer patches torchvision."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vk_testing import ROOT, import_pack

import_pack()
from visionkit_pack.models.core import weights  # noqa: E402


def test_safetensors_and_nested_pth_load(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    torch.save({"params_ema": sd}, tmp_path / "m.pth")
    torch.save({"state_dict": {"model": sd}}, tmp_path / "deep.ckpt")
    for name in ("m.safetensors", "m.pth", "deep.ckpt"):
        out = weights.load_state_dict(str(tmp_path / name))
        assert set(out) == set(sd) and torch.equal(out["a.weight"], sd["a.weight"])


def test_zero_byte_and_truncated_files_get_clear_messages(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(weights.WeightsError, match="zero-byte.*download it again"):
        weights.load_state_dict(str(tmp_path / "empty.pth"))
    save_file({"w": torch.randn(64, 64)}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(weights.WeightsError, match="truncated"):
        weights.load_state_dict(str(tmp_path / "cut.safetensors"))
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(weights.WeightsError, match="truncated"):
        weights.load_state_dict(str(tmp_path / "cut.pth"))


class Payload:
    """Unpickling this would create a file: proof that nothing was executed when it is refused."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "evil": Payload(str(marker))}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(weights.WeightsError, match="pickled Python objects.*refuses"):
        weights.load_state_dict(str(tmp_path / "evil.pth"))
    assert not marker.exists(), "the pickle payload ran"


def test_file_without_tensors_is_explained(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "opt.pth")
    with pytest.raises(weights.WeightsError, match="no tensors"):
        weights.load_state_dict(str(tmp_path / "opt.pth"))


def test_upscaling_leaves_torchvision_alone_in_a_fresh_process(models_dir):
    """The pack used to register a stand-in `torchvision.transforms.functional_tensor` for basicsr, which every
    other pack in the same ComfyUI then saw. Upscaling runs on spandrel now: loading and running an upscale
    model imports no basicsr / realesrgan and registers nothing under torchvision's names."""
    model = str(models_dir / "upscale_models" / "tiny_RealESRGAN_x4plus.pth")
    code = (
        "import importlib.util,sys,torch\n"
        f"spec=importlib.util.spec_from_file_location('vkp', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m=importlib.util.module_from_spec(spec); sys.modules['vkp']=m; spec.loader.exec_module(m)\n"
        "from vkp.models.upscale import arch, tiles\n"
        f"spec,_=arch.load_upscale_model({model!r})\n"
        "out=tiles.upscale_image(spec, torch.rand(1, 8, 8, 3), tile=0)\n"
        "print('SHAPE', tuple(out.shape))\n"
        "print('FT', 'torchvision.transforms.functional_tensor' in sys.modules)\n"
        "print('BASICSR', any(k.startswith(('basicsr', 'realesrgan')) for k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VISIONKIT_STANDALONE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "SHAPE (1, 32, 32, 3)" in lines and "FT False" in lines and "BASICSR False" in lines, out.stdout


# ---------------------------------------------------------------- issue 19: harmless pickles, one refusal wording
class _System:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_training_arguments_beside_the_weights_are_allowed(tmp_path, legacy):
    """argparse.Namespace / numpy scalars are on the short allow-list (safe_globals); the weights load."""
    import argparse

    import numpy as np

    sd = {"a.weight": torch.randn(2, 3)}
    torch.save({"model": sd, "args": argparse.Namespace(lr=0.1, arch="vit_b"), "best": np.float64(0.5)},
               tmp_path / "m.pth", _use_new_zipfile_serialization=not legacy)
    out = weights.load_state_dict(str(tmp_path / "m.pth"))
    assert set(out) == {"a.weight"} and torch.equal(out["a.weight"], sd["a.weight"])
    import argparse as _a
    assert _a.Namespace in weights.safe_globals()  # the allow-list is in effect only during the load
    with pytest.raises(Exception, match="Namespace"):
        torch.load(tmp_path / "m.pth", weights_only=True)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_other_globals_are_named_in_the_refusal(tmp_path, legacy):
    torch.save({"w": torch.zeros(1), "evil": _System()}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(weights.WeightsError) as ei:
        weights.load_state_dict(str(tmp_path / "evil.pth"))
    msg = str(ei.value)
    assert "pickled Python objects" in msg and "system" in msg, msg
    assert "weights_only" not in msg, msg  # never torch's advice to turn the protection off


def test_random_bytes_are_not_called_pickled_objects(tmp_path):
    (tmp_path / "noise.pth").write_bytes(os.urandom(4096))
    with pytest.raises(weights.WeightsError) as ei:
        weights.load_state_dict(str(tmp_path / "noise.pth"))
    msg = str(ei.value)
    assert "could not be read as PyTorch weights" in msg and "pickled Python objects" not in msg, msg
    assert "weights_only" not in msg, msg


def test_grounding_dino_folder_with_a_pickled_bin_uses_the_pack_wording(tmp_path, pack):
    """A transformers folder whose pytorch_model.bin holds a pickled object: refused with the pack's words,
    not torch's UnpicklingError (which tells the user to set weights_only=False), and nothing runs."""
    import shutil

    from visionkit_pack.models.perception import grounding_dino as G

    src = pack_models_dir() / "grounding-dino" / "tiny-grounding-dino"
    d = tmp_path / "gd"
    shutil.copytree(src, d)
    sd = weights.load_state_dict(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**sd, "evil": Payload(str(marker))}, d / "pytorch_model.bin")
    with pytest.raises(G.GroundingDinoError) as ei:
        G._load_folder(str(d))
    msg = str(ei.value)
    assert "pickled Python objects" in msg and "weights_only" not in msg, msg
    assert not marker.exists()


def pack_models_dir():
    from pathlib import Path

    return Path(os.environ["VISIONKIT_MODELS_DIR"].split(os.pathsep)[0])
