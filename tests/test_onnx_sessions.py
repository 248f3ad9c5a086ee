"""ONNX sessions live in the shared cache: one per file and provider, released by a purge."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from vk_testing import import_pack, tiers

import_pack()
from visionkit_pack.models.core import onnx_sessions as ox  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402


@pytest.fixture()
def tiny_onnx(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path / "tiny.onnx"
    x = torch.randn(1, 3, 8, 8)
    torch.onnx.export(net, x, str(path), input_names=["input"], output_names=["out"], dynamo=False)
    return str(path), net, x


def test_session_cached_once_and_matches_torch(pack, tiny_onnx):
    path, net, x = tiny_onnx
    spec, sess = ox.get_session(path, "auto")
    spec2, sess2 = ox.get_session(path, "auto")
    assert sess is sess2 and spec == spec2
    with get_cache().use(spec) as s:
        (out,) = s.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, net(x).detach().numpy(), atol=1e-5)
    e = [e for e in get_cache().entries() if e["kind"] == "onnx"][0]
    assert e["device"] == "cpu" and e["meta_provider"] == "CPUExecutionProvider"
    assert e["bytes"] > 0 and e["hits"] >= 2


def test_purge_releases_the_session(pack, tiny_onnx):
    path, _, _ = tiny_onnx
    spec, sess = ox.get_session(path)
    ref = weakref.ref(sess)
    del sess
    get_cache().purge()
    gc.collect()
    assert ref() is None


def test_auto_is_cpu_without_a_gpu_and_cuda_choice_explains(pack):
    if torch.cuda.is_available():
        tiers.optional("this machine has a GPU (the check is for machines without one)")
    assert ox.choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ox.OnnxModelError, match="CUDA provider was asked for"):
        ox.choose_providers("CUDA")
    with pytest.raises(ValueError, match="not one of"):
        ox.choose_providers("TPU")


def test_broken_onnx_files_are_explained(pack, tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx graph at all")
    with pytest.raises(ox.OnnxModelError, match="empty file"):
        ox.get_session(str(tmp_path / "empty.onnx"))
    with pytest.raises(ox.OnnxModelError, match="could not be opened"):
        ox.get_session(str(tmp_path / "junk.onnx"))
    assert len(get_cache()) == 0
