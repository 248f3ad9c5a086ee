"""Per-run patches: applied for one run, undone after it even on exceptions; the cached model never leaks."""
from __future__ import annotations

import threading

import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.core.patching import PatchError, RunPatches, model_lock  # noqa: E402


def snapshot(m):
    return {k: (v, v.clone()) for k, v in m.state_dict(keep_vars=True).items()}


def assert_identical(m, snap):
    now = m.state_dict(keep_vars=True)
    assert set(now) == set(snap)
    for k, (obj, val) in snap.items():
        assert now[k] is obj, f"{k}: not the same tensor object"
        assert torch.equal(now[k], val), f"{k}: values changed"


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_weights_patched_inside_and_bit_identical_after():
    m = make_model()
    snap = snapshot(m)
    x = torch.randn(3, 4)
    before = m(x)
    with RunPatches(m) as p:
        p.set_params(m, {"0.weight": m[0].weight * 2 + 1, "2.bias": torch.zeros(2)})
        assert not torch.equal(m(x), before)
        assert torch.equal(m[2].bias, torch.zeros(2))
    assert_identical(m, snap)
    assert torch.equal(m(x), before)


def test_restored_even_when_the_run_raises():
    m = make_model()
    snap = snapshot(m)
    with pytest.raises(ValueError, match="boom"):
        with RunPatches(m) as p:
            p.set_params(m, {"0.weight": torch.zeros(4, 4)})
            p.set_attr(m, "vk_mode", "ip-adapter")
            p.set_item(m._modules, "1", torch.nn.Tanh())
            raise ValueError("boom")
    assert_identical(m, snap)
    assert not hasattr(m, "vk_mode")
    assert isinstance(m[1], torch.nn.ReLU)


def test_attr_overwrite_restores_old_value_and_order_is_lifo():
    class Obj:
        mode = "class default"

    o = Obj()
    o.mode = "instance"
    order = []
    with RunPatches() as p:
        p.set_attr(o, "mode", "first")
        p.set_attr(o, "mode", "second")
        p.add(lambda: order.append("apply"), lambda: order.append("undo-last"))
        assert o.mode == "second"
    assert o.mode == "instance" and order == ["apply", "undo-last"]


def test_failed_apply_is_not_undone_and_other_undos_still_run():
    m = make_model()
    snap = snapshot(m)
    with pytest.raises(KeyError):
        with RunPatches(m) as p:
            p.set_params(m, {"0.weight": torch.zeros(4, 4)})
            p.set_params(m, {"9.weight": torch.zeros(1)})  # no such parameter
    assert_identical(m, snap)


def test_all_undos_run_even_if_one_fails_and_the_failure_is_reported():
    log = []
    with pytest.raises(PatchError, match="second: nope"):
        with RunPatches() as p:
            p.add(None, lambda: log.append("first"), "first")
            p.add(None, lambda: (_ for _ in ()).throw(RuntimeError("nope")), "second")
            p.add(None, lambda: log.append("third"), "third")
    assert log == ["third", "first"]


def test_two_threads_sharing_a_model_never_see_each_others_patches():
    m = make_model()
    snap = snapshot(m)
    seen, errors = [], []
    barrier = threading.Barrier(2)

    def run(value):
        try:
            barrier.wait()
            for _ in range(20):
                with RunPatches(m) as p:
                    p.set_params(m, {"2.bias": torch.full((2,), float(value))})
                    got = float(m[2].bias[0].detach())
                    seen.append((value, got))
        except Exception as ex:  # pragma: no cover
            errors.append(ex)

    threads = [threading.Thread(target=run, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and len(seen) == 40
    assert all(v == got for v, got in seen)
    assert_identical(m, snap)


def test_model_lock_is_one_per_object():
    a, b = make_model(), make_model()
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
