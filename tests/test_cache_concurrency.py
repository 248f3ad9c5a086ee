"""The shared cache under concurrent use, through a real loader (the Real-ESRGAN loader node and its files).

Many threads start together (a barrier) and ask for the same file and for different files. Counted: the
builder's calls (`models/upscale/arch.build_model`) and the file reads (`torch.load` / safetensors' `load_file`).
No sleeps make threads overlap: a read is held open by an event until the situation the test is about
exists (every other thread waits for that in-flight load; a second file's read runs at the same time; a
purge arrived while a model is in use), with a deadline, so a cache that serialises or never waits fails. Each file must be read and built once; different files load
side by side; under a small VISIONKIT_CACHE_GB the cache evicts but never holds more than its budget
beyond the models in use, and ends within it; a purge from another thread (the HTTP route) never pulls
a model from under a running node; every join has a timeout, so a deadlock fails the test.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest
import torch

TINY = ["tiny_RealESRGAN_x4plus.pth", "tiny_RealESRGAN_x2plus.pth", "tiny_realesr-general-x4v3.safetensors",
        "nested/tiny_srvgg_x2.pth"]
JOIN_TIMEOUT = 60
GATE_TIMEOUT = 20  # how long a held read waits for the situation it is held for (only a broken cache waits)


class Counting:
    """Counts builder calls and file reads per path (thread-safe) and records when reads ran. `gate(name)`,
    if given, runs inside each read before the file is read: the test holds the read open there."""

    def __init__(self, monkeypatch, upscale_mod, gate=None):
        import safetensors.torch as st

        self.lock = threading.Lock()
        self.reads: Counter = Counter()
        self.builds = 0
        self.read_spans: list[tuple[str, float, float]] = []
        orig_load, orig_st, orig_build = torch.load, st.load_file, upscale_mod.build_model

        def timed(path, fn):
            t0 = time.monotonic()
            if gate is not None:
                gate(os.path.basename(str(path)))
            try:
                return fn()
            finally:
                with self.lock:
                    self.reads[os.path.basename(str(path))] += 1
                    self.read_spans.append((os.path.basename(str(path)), t0, time.monotonic()))

        def load(f, *a, **k):
            return timed(f, lambda: orig_load(f, *a, **k))

        def load_file(f, *a, **k):
            return timed(f, lambda: orig_st(f, *a, **k))

        def build_model(*a, **k):
            with self.lock:
                self.builds += 1
            return orig_build(*a, **k)

        monkeypatch.setattr(torch, "load", load)
        monkeypatch.setattr(st, "load_file", load_file)
        monkeypatch.setattr(upscale_mod, "build_model", build_model)

    def max_overlap(self) -> int:
        events = sorted([(t0, 1) for _, t0, _ in self.read_spans] + [(t1, -1) for _, _, t1 in self.read_spans])
        cur = best = 0
        for _, d in events:
            cur += d
            best = max(best, cur)
        return best


class InflightWaiters:
    """Counts the threads waiting on an in-flight load (the cache's `_Inflight.done` event), so a held read
    can wait, with a deadline, until every other thread really waits for it."""

    def __init__(self, monkeypatch):
        from visionkit_pack.models.core import cache as cache_mod

        self.cond = threading.Condition()
        self.count = 0
        outer = self

        class CountingEvent(threading.Event):
            def wait(self, timeout=None):
                with outer.cond:
                    outer.count += 1
                    outer.cond.notify_all()
                return super().wait(timeout)

        class Inflight(cache_mod._Inflight):
            def __init__(self):
                super().__init__()
                self.done = CountingEvent()

        monkeypatch.setattr(cache_mod, "_Inflight", Inflight)

    def wait_for(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, GATE_TIMEOUT)


def run_threads(n, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i):
        try:
            barrier.wait(JOIN_TIMEOUT)
            target(i)
        except BaseException as ex:  # reported below
            errors.append(ex)

    threads = [threading.Thread(target=wrapped, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.1))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"deadlock: {len(stuck)} thread(s) still waiting after {JOIN_TIMEOUT} s"
    return errors


@pytest.fixture()
def env(pack, monkeypatch):
    from visionkit_pack.models.upscale import arch as upscale_arch
    from visionkit_pack.models.core.cache import get_cache

    loader = pack.NODE_CLASS_MAPPINGS["VisionKitUpscaleModelLoader"]()
    return loader, get_cache(), upscale_arch, monkeypatch


def run_model(cache, spec):
    with cache.use(spec) as net:
        out = net(torch.rand(1, 3, 8, 8))
        assert out.shape[-1] in (16, 32) and torch.isfinite(out).all()


def test_same_file_from_many_threads_is_read_and_built_once(env):
    loader, cache, upscale, mp = env
    waiters = InflightWaiters(mp)
    held = []
    count = Counting(mp, upscale, gate=lambda name: held.append(waiters.wait_for(7)))  # the 7 others wait
    specs = []

    def work(i):
        (spec,) = loader.load(TINY[0])
        specs.append(spec)
        run_model(cache, spec)

    errors = run_threads(8, work)
    assert not errors, errors
    assert held == [True], "the other threads never waited for the in-flight load: the test did not race"
    assert count.reads == Counter({TINY[0]: 1}) and count.builds == 1
    t = cache.stats()["totals"]
    assert (t["entries"], t["misses"], t["hits"]) == (1, 1, 15)  # 8 loads + 8 uses, one of them built it
    assert all(s == specs[0] for s in specs)


def test_different_files_load_side_by_side_each_once(env):
    loader, cache, upscale, mp = env
    reading, two_at_once = Counter(), threading.Event()
    lock = threading.Lock()

    def gate(name):  # each read is held until reads of two different files run at the same time
        with lock:
            reading[name] += 1
            if len(+reading) >= 2:
                two_at_once.set()
        two_at_once.wait(GATE_TIMEOUT)
        with lock:
            reading[name] -= 1

    count = Counting(mp, upscale, gate=gate)

    def work(i):
        (spec,) = loader.load(TINY[i % 4])
        run_model(cache, spec)

    errors = run_threads(12, work)  # three threads per file
    assert not errors, errors
    assert count.reads == Counter({os.path.basename(n): 1 for n in TINY}) and count.builds == 4
    assert two_at_once.is_set() and count.max_overlap() >= 2, count.read_spans  # files do not wait for each other
    t = cache.stats()["totals"]
    assert (t["entries"], t["misses"], t["hits"]) == (4, 4, 20)


def test_small_budget_evicts_and_is_respected(env):
    loader, cache, upscale, mp = env
    sizes = {}
    for n in TINY:  # measure each model once, then start from an empty cache
        (spec,) = loader.load(n)
        sizes[n] = [e["bytes"] for e in cache.entries() if e["path"] == spec.path][0]
    cache.purge()
    biggest = max(sizes.values())
    budget = int(biggest * 1.5)  # room for one RRDBNet and the small compact models, not both RRDBNets
    mp.setenv("VISIONKIT_CACHE_GB", repr(budget / 2**30))
    assert cache.budget() == budget
    misses0 = cache.stats()["totals"]["misses"]
    count = Counting(mp, upscale)
    violations = []

    def work(i):
        rng = random.Random(i)
        for _ in range(25):
            (spec,) = loader.load(rng.choice(TINY))
            run_model(cache, spec)
            st = cache.stats()
            in_use = sum(e["bytes"] for e in st["entries"] if e["in_use"])
            if st["totals"]["bytes"] > budget + in_use + biggest:  # + the entry just used, kept by LRU
                violations.append((st["totals"]["bytes"], in_use))

    errors = run_threads(6, work)
    assert not errors, errors
    assert not violations, violations[:5]
    t = cache.stats()["totals"]
    assert t["evictions"] > 0 and t["bytes"] <= budget, t
    assert all(not e["in_use"] for e in cache.entries())
    # a file is read only when it is (re)built, never twice for one miss
    assert sum(count.reads.values()) == count.builds == t["misses"] - misses0, (count.reads, count.builds, t)


def test_purge_from_another_thread_never_pulls_a_model_in_use(env):
    """Every use of a model waits (events, with a deadline) until the purging thread has purged while it runs."""
    loader, cache, upscale, mp = env
    Counting(mp, upscale)
    cond = threading.Condition()
    state = {"asked": 0, "purged": 0, "stop": False}
    purges, missed = [], []

    def purger():
        while True:
            with cond:
                if not cond.wait_for(lambda: state["stop"] or state["asked"] > state["purged"], JOIN_TIMEOUT):
                    return
                if state["stop"]:
                    return
                asked = state["asked"]
            purges.append(cache.purge())  # the HTTP route's purge
            with cond:
                state["purged"] = asked
                cond.notify_all()

    def work(i):
        for j in range(3):
            (spec,) = loader.load(TINY[(i + j) % 4])
            with cache.use(spec) as net:
                with cond:  # ask for a purge now, and wait until it ran, while the model is in use
                    state["asked"] += 1
                    ticket = state["asked"]
                    cond.notify_all()
                    if not cond.wait_for(lambda: state["purged"] >= ticket, GATE_TIMEOUT):
                        missed.append(ticket)
                assert net(torch.rand(1, 3, 8, 8)).isfinite().all()

    purging = threading.Thread(target=purger, daemon=True)
    purging.start()
    try:
        errors = run_threads(3, work)
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        purging.join(JOIN_TIMEOUT)
    assert not errors, errors
    assert not missed, f"no purge came while {len(missed)} use(s) waited for one"
    assert purges and all(p["deferred"] for p in purges), purges  # every purge met a model in use
    cache.purge()
    assert len(cache) == 0


def test_broken_file_from_many_threads_fails_clearly_and_caches_nothing(env, models_dir):
    loader, cache, upscale, mp = env
    bad = models_dir / "upscale_models" / "zz_concurrency_empty.pth"
    bad.write_bytes(b"")
    try:
        messages = []

        def work(i):
            try:
                loader.load(bad.name)
            except Exception as ex:
                messages.append(str(ex))

        errors = run_threads(6, work)
        assert not errors
        assert len(messages) == 6 and all("zero-byte" in m for m in messages), messages
        assert len(cache) == 0
        (spec,) = loader.load(TINY[0])  # the cache still works
        run_model(cache, spec)
    finally:
        bad.unlink()
