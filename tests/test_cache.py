"""The shared model cache: keys, hits/misses, LRU under a budget, device tiers, thread safety, purge, stats."""
from __future__ import annotations

import os
import threading

import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.core import cache as C  # noqa: E402
from visionkit_pack.models.core.folders import ModelNotFoundError  # noqa: E402

BUILDS: list[str] = []
GATES: dict = {}  # name -> a function a build calls first (spec option "gate"): tests hold builds open with it
GATE_TIMEOUT = 20  # only a broken cache makes a held build wait this long


def build_linear(spec, device):
    """A module of a size given by the spec's options; every call is recorded."""
    BUILDS.append(spec.path)
    gate = spec.option("gate", None)
    if gate:
        GATES[gate]()
    if spec.option("fail"):
        raise RuntimeError("broken file")
    n = spec.option("floats", 256)
    m = torch.nn.Linear(n, 1, bias=False)
    return m.to(device)


def build_onnx_like(spec, device):
    BUILDS.append(spec.path)
    return C.Loaded(object(), meta={"device": "cpu", "provider": "CPUExecutionProvider"}, nbytes=1234)


@pytest.fixture(autouse=True)
def _reset():
    BUILDS.clear()
    GATES.clear()


def inflight_waiters(monkeypatch):
    """A function n -> bool: wait (deadline) until n threads wait on an in-flight load (`_Inflight.done`)."""
    cond, count = threading.Condition(), [0]

    class CountingEvent(threading.Event):
        def wait(self, timeout=None):
            with cond:
                count[0] += 1
                cond.notify_all()
            return super().wait(timeout)

    class Inflight(C._Inflight):
        def __init__(self):
            super().__init__()
            self.done = CountingEvent()

    monkeypatch.setattr(C, "_Inflight", Inflight)

    def wait_for(n: int) -> bool:
        with cond:
            return cond.wait_for(lambda: count[0] >= n, GATE_TIMEOUT)

    return wait_for


def make_file(tmp_path, name, size=10):
    p = tmp_path / name
    p.write_bytes(b"x" * size)
    return str(p)


def spec_for(path, floats=256, **opts):
    return C.ModelSpec("test", path, build_linear, options=tuple(sorted({"floats": floats, **opts}.items())))


def test_same_file_loaded_once_and_hits_counted(tmp_path):
    cache = C.ModelCache(budget_bytes=1 << 30)
    p = make_file(tmp_path, "a.pth")
    with cache.use(spec_for(p)) as m1:
        pass
    with cache.use(spec_for(p)) as m2:
        pass
    assert m1 is m2
    assert BUILDS == [p]
    t = cache.stats()["totals"]
    assert (t["hits"], t["misses"], t["entries"]) == (1, 1, 1)
    assert t["bytes"] == 256 * 4
    assert t["bytes_by_device"] == {"cpu": 1024}


def test_key_includes_dtype_variant_and_file_identity(tmp_path):
    cache = C.ModelCache(budget_bytes=1 << 30)
    p = make_file(tmp_path, "a.pth")
    base = spec_for(p)
    cache.load(base)
    cache.load(C.ModelSpec("test", p, build_linear, dtype="fp16", options=base.options))
    cache.load(C.ModelSpec("test", p, build_linear, variant="inpaint", options=base.options))
    assert len(BUILDS) == 3 and len(cache) == 3
    # the file changes on disk (size and mtime): a new load, and the stale entry of that spec goes
    before = os.stat(p)
    with open(p, "ab") as f:
        f.write(b"more")
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later mtime without waiting for one
    cache.load(base)
    assert len(BUILDS) == 4 and len(cache) == 3


def test_lru_eviction_under_budget(tmp_path):
    cache = C.ModelCache(budget_bytes=2500)  # room for two 1024-byte models
    a, b, c = (make_file(tmp_path, n) for n in ("a", "b", "c"))
    cache.load(spec_for(a))
    cache.load(spec_for(b))
    cache.load(spec_for(a))  # a is now the most recently used
    cache.load(spec_for(c))  # evicts b, the least recently used
    paths = {e["path"] for e in cache.entries()}
    assert paths == {a, c}
    assert cache.stats()["totals"]["evictions"] == 1
    assert cache.stats()["totals"]["bytes"] <= 2500


def test_pinned_entry_is_never_evicted_or_purged_under_a_user(tmp_path):
    cache = C.ModelCache(budget_bytes=1500)
    a, b = make_file(tmp_path, "a"), make_file(tmp_path, "b")
    with cache.use(spec_for(a)) as ma:
        cache.load(spec_for(b))  # over budget, but a is in use: b (the newest) stays too
        assert len(cache) == 2
        res = cache.purge()
        assert res["deferred"] and res["purged"]
        assert ma.weight.shape == (1, 256)  # still usable inside the block
        assert len(cache) == 1
    assert len(cache) == 0  # dropped when the use ended


def test_single_model_bigger_than_budget_still_loads(tmp_path):
    cache = C.ModelCache(budget_bytes=100)
    with cache.use(spec_for(make_file(tmp_path, "big"))) as m:
        assert isinstance(m, torch.nn.Module)
    assert len(cache) == 1  # kept: nothing else to evict, and dropping it would only reload it


def test_accelerator_tier_moves_to_cpu_before_dropping(tmp_path, monkeypatch):
    """Over the device budget models go to the CPU first; over the CPU budget they are dropped."""
    moves = []

    class FakeDeviceModule(torch.nn.Linear):
        """Pretends to live on a GPU; .to() only records the move."""
        dev = "cuda:0"

        def to(self, *a, **k):
            self.dev = str(a[0] if a else k.get("device"))
            moves.append(self.dev)
            return self

    def build_fake(spec, device):
        BUILDS.append(spec.path)
        return FakeDeviceModule(256, 1, bias=False)

    monkeypatch.setattr(C.host, "torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(C, "device_of", lambda mods: mods[0].dev if mods else "cpu")
    cache = C.ModelCache(budget_bytes=1500, cpu_budget_bytes=1500)
    specs = [C.ModelSpec("t", make_file(tmp_path, n), build_fake) for n in "abc"]
    cache.load(specs[0])
    cache.load(specs[1])  # device over budget → a moves to cpu
    assert "cpu" in moves
    devices = {e["path"][-1]: e["device"] for e in cache.entries()}
    assert devices["a"] == "cpu"
    cache.load(specs[2])  # b moves to cpu, and cpu is then over budget → a (oldest) is dropped
    assert {e["path"][-1] for e in cache.entries()} == {"b", "c"}


def test_concurrent_loads_same_file_built_once(tmp_path, monkeypatch):
    cache = C.ModelCache(budget_bytes=1 << 30)
    p = make_file(tmp_path, "slow")
    waiting = inflight_waiters(monkeypatch)
    held = []
    GATES["seven_wait"] = lambda: held.append(waiting(7))  # the build ends once the 7 others wait for it
    spec = spec_for(p, gate="seven_wait")
    results, errors = [], []

    def worker():
        try:
            with cache.use(spec) as m:
                results.append(m)
        except Exception as ex:  # pragma: no cover - reported below
            errors.append(ex)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and len(results) == 8
    assert held == [True], "the other threads never waited for the build: the test did not race"
    assert all(r is results[0] for r in results)
    assert BUILDS == [p]
    t = cache.stats()["totals"]
    assert t["misses"] == 1 and t["hits"] == 7


def test_concurrent_loads_of_different_files_run_in_parallel(tmp_path):
    """Each build waits at a barrier for the other three: only builds that run at the same time pass it (a
    cache that built behind one lock would break the barrier at its deadline)."""
    cache = C.ModelCache(budget_bytes=1 << 30)
    barrier = threading.Barrier(4, timeout=GATE_TIMEOUT)
    GATES["all_four"] = barrier.wait
    specs = [spec_for(make_file(tmp_path, f"f{i}"), gate="all_four") for i in range(4)]
    errors = []

    def load(s):
        try:
            cache.load(s)
        except Exception as ex:
            errors.append(ex)

    threads = [threading.Thread(target=load, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GATE_TIMEOUT + 10)
    assert not errors, f"the four builds did not run at the same time: {errors}"
    assert len(cache) == 4 and len(BUILDS) == 4


def test_concurrent_mixed_loads_respect_budget_and_do_not_deadlock(tmp_path):
    cache = C.ModelCache(budget_bytes=3 * 1024 + 100)
    files = [make_file(tmp_path, f"m{i}") for i in range(6)]
    errors = []

    def worker(seed):
        try:
            for j in range(20):
                with cache.use(spec_for(files[(seed + j) % 6])):
                    pass
        except Exception as ex:  # pragma: no cover
            errors.append(ex)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors
    assert cache.stats()["totals"]["bytes"] <= 3 * 1024 + 100
    assert all(not e["in_use"] for e in cache.entries())


def test_failed_load_is_not_cached_and_waiters_get_the_error(tmp_path, monkeypatch):
    cache = C.ModelCache(budget_bytes=1 << 30)
    waiting = inflight_waiters(monkeypatch)
    held = []
    GATES["two_wait"] = lambda: held.append(waiting(2))  # fail only once the two others wait for this build
    spec = spec_for(make_file(tmp_path, "bad"), fail=True, gate="two_wait")
    errors = []

    def worker():
        try:
            cache.load(spec)
        except RuntimeError as ex:
            errors.append(str(ex))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == ["broken file"] * 3 and held == [True]
    assert len(BUILDS) == 1 and len(cache) == 0
    cache.load(spec_for(spec.path))  # a later good load is not blocked by the failed one
    assert len(cache) == 1


def test_missing_file_message(tmp_path):
    cache = C.ModelCache(budget_bytes=1 << 30)
    with pytest.raises(ModelNotFoundError, match="gone from disk"):
        cache.load(spec_for(str(tmp_path / "nope.pth")))


def test_purge_by_key_and_stats_shape(tmp_path):
    cache = C.ModelCache(budget_bytes=1 << 30)
    a, b = make_file(tmp_path, "a"), make_file(tmp_path, "b")
    cache.load(spec_for(a))
    cache.load(C.ModelSpec("onnx", b, build_onnx_like))
    stats = cache.stats()
    assert set(stats) == {"entries", "totals"}
    for e in stats["entries"]:
        assert {"key", "kind", "path", "device", "bytes", "hits", "loaded_at"} <= set(e)
    assert {"bytes_by_device", "hits", "misses", "load_seconds"} <= set(stats["totals"])
    onnx = [e for e in stats["entries"] if e["kind"] == "onnx"][0]
    assert onnx["bytes"] == 1234 and onnx["meta_provider"] == "CPUExecutionProvider"
    res = cache.purge([onnx["key"], "nonsense"])
    assert res == {"purged": [onnx["key"]], "deferred": [], "unknown": ["nonsense"]}
    assert [e["kind"] for e in cache.entries()] == ["test"]


def test_purge_releases_the_model_memory(tmp_path):
    """After a purge the cache holds no reference: the module is garbage."""
    import gc
    import weakref

    cache = C.ModelCache(budget_bytes=1 << 30)
    with cache.use(spec_for(make_file(tmp_path, "a"))) as m:
        ref = weakref.ref(m)
    del m
    cache.purge()
    gc.collect()
    assert ref() is None


def test_global_cache_is_standalone_outside_comfyui():
    assert os.environ["VISIONKIT_STANDALONE"] == "1"
    assert C.get_cache().bridge is None
