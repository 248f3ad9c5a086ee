"""The shared model cache: every loader goes through it, so one file is loaded once, whichever node asks.

Contract:
- key = resolved path + size + mtime + dtype + variant (+ kind and build options); a file that changed
  on disk gets a new key, and its stale entry is dropped;
- thread-safe: ComfyUI runs prompts in a worker thread and HTTP routes in the event loop. The same key
  requested from several threads at once is built once (the others wait for it); different keys load
  in parallel;
- standalone (tests, bench, scripts): an LRU with a memory budget per device. Over the accelerator's
  budget the least recently used models move to the CPU first; over the CPU budget they are dropped;
- inside ComfyUI every entry is registered with comfy.model_management through the bridge
  (comfy_bridge.py; the cache calls it, the bridge calls the cache back only through `purge` and
  `mark_released`), which moves torch models between devices; after `POST /free` the pack drops every entry;
- entries in use are pinned: a purge or an eviction never pulls a model from under a running node, it
  drops the entry when that use ends;
- stats (entries, bytes per device, hits, misses, load seconds) for the node, the route and the panel.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import host
from .folders import ModelNotFoundError
from .memory import device_of, free_memory, module_bytes, torch_modules

log = logging.getLogger("visionkit")


@dataclass(frozen=True)
class ModelSpec:
    """A small, hashable description of a model: what travels through the graph as a handle.

    `build(spec, device)` returns the loaded object (or a `Loaded`); it must be a module-level function
    so that two loaders asking for the same file produce equal specs.
    """

    kind: str
    path: str
    build: Callable[["ModelSpec", Any], Any] = field(compare=True, repr=False)
    dtype: str = "auto"
    variant: str = ""
    options: tuple = ()

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)


@dataclass
class Loaded:
    """What a builder may return instead of the bare object: extra facts for the UI and accounting."""

    value: Any
    meta: dict = field(default_factory=dict)
    nbytes: int | None = None  # defaults to the size of the torch modules found in value


def file_identity(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a file, or of a folder's files summed / newest."""
    st = os.stat(path)
    if not os.path.isdir(path):
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, st.st_mtime_ns
    for root, _dirs, files in os.walk(path, followlinks=True):
        for f in files:
            try:
                s = os.stat(os.path.join(root, f))
            except OSError:
                continue
            size += s.st_size
            mtime = max(mtime, s.st_mtime_ns)
    return size, mtime


@dataclass
class Entry:
    key: str
    spec: ModelSpec
    identity: tuple
    value: Any
    meta: dict
    nbytes: int
    device: str
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    hits: int = 0
    pins: int = 0
    drop_after_use: bool = False
    released: bool = False  # ComfyUI unloaded it (fallback path of comfy_bridge): drop at next access
    patcher: Any = None  # ComfyUI's ModelPatcher for this entry, inside ComfyUI

    def as_dict(self) -> dict:
        return {
            "key": self.key, "kind": self.spec.kind, "path": self.spec.path, "device": self.device,
            "bytes": self.nbytes, "hits": self.hits, "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 4), "dtype": self.spec.dtype,
            "variant": self.spec.variant, "in_use": self.pins > 0, **{f"meta_{k}": v for k, v in self.meta.items()},
        }


class _Inflight:
    def __init__(self):
        self.done = threading.Event()
        self.error: BaseException | None = None


class ModelCache:
    def __init__(self, budget_bytes: int | None = None, cpu_budget_bytes: int | None = None, bridge=None):
        self._lock = threading.RLock()
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._inflight: dict[str, _Inflight] = {}
        self._budget = budget_bytes
        self._cpu_budget = cpu_budget_bytes
        self.bridge = bridge  # ComfyBridge inside ComfyUI, else None
        self.hits = self.misses = self.evictions = 0
        self.load_seconds = 0.0

    # ------------------------------------------------------------ keys and budgets
    @staticmethod
    def make_key(spec: ModelSpec, identity: tuple) -> str:
        raw = "|".join(map(str, (spec.kind, os.path.abspath(spec.path), *identity, spec.dtype, spec.variant,
                                 spec.options, getattr(spec.build, "__qualname__", spec.build))))
        return f"{spec.kind}:{os.path.basename(spec.path.rstrip(os.sep))}:{hashlib.sha1(raw.encode()).hexdigest()[:10]}"

    def budget(self) -> int:
        return self._budget if self._budget is not None else host.cache_budget_bytes()

    def cpu_budget(self) -> int:
        return self._cpu_budget if self._cpu_budget is not None else host.cpu_budget_bytes()

    # ------------------------------------------------------------ public API
    def load(self, spec: ModelSpec) -> Entry:
        """Make sure `spec` is cached (loaders call this so a missing or broken file fails at the loader)."""
        entry = self._acquire(spec)
        self._release(entry)
        return entry

    @contextmanager
    def use(self, spec: ModelSpec) -> Iterator[Any]:
        """The loaded model, on its device, pinned for the duration of the `with` block."""
        entry = self._acquire(spec)
        try:
            self._to_device(entry)
            yield entry.value
        finally:
            self._release(entry)

    @contextmanager
    def use_entry(self, spec: ModelSpec) -> Iterator[Entry]:
        entry = self._acquire(spec)
        try:
            self._to_device(entry)
            yield entry
        finally:
            self._release(entry)

    def purge(self, keys: list[str] | None = None) -> dict:
        """Drop entries (all, or the given keys). Entries in use are dropped when their use ends."""
        purged, deferred, unknown = [], [], []
        with self._lock:
            targets = list(self._entries) if keys is None else list(keys)
            for k in targets:
                e = self._entries.get(k)
                if e is None:
                    unknown.append(k)
                elif e.pins > 0:
                    e.drop_after_use = True
                    deferred.append(k)
                else:
                    self._drop(e)
                    purged.append(k)
        if purged:
            free_memory()
        return {"purged": purged, "deferred": deferred, "unknown": unknown}

    def entries(self) -> list[dict]:
        with self._lock:
            self._refresh_devices()
            return [e.as_dict() for e in reversed(self._entries.values())]  # most recently used first

    def stats(self) -> dict:
        with self._lock:
            self._refresh_devices()
            by_dev: dict[str, int] = {}
            for e in self._entries.values():
                by_dev[e.device] = by_dev.get(e.device, 0) + e.nbytes
            return {
                "entries": [e.as_dict() for e in reversed(self._entries.values())],
                "totals": {
                    "entries": len(self._entries), "bytes": sum(by_dev.values()), "bytes_by_device": by_dev,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "load_seconds": round(self.load_seconds, 4), "budget_bytes": self.budget(),
                },
            }

    def mark_released(self, key: str) -> None:
        """ComfyUI unloaded this entry's model behind the cache's back (the bridge's fallback): drop the
        entry at the next cache access, once nothing uses it."""
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                e.released = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    # ------------------------------------------------------------ acquire / release
    def _acquire(self, spec: ModelSpec) -> Entry:
        try:
            identity = file_identity(spec.path)
        except FileNotFoundError as ex:
            raise ModelNotFoundError(f"model file {spec.path} is gone from disk; pick another one or put it back") from ex
        key = self.make_key(spec, identity)
        while True:
            with self._lock:
                self._drop_released()
                e = self._entries.get(key)
                if e is not None:
                    e.hits += 1
                    e.pins += 1
                    self.hits += 1
                    self._entries.move_to_end(key)
                    return e
                fut = self._inflight.get(key)
                owner = fut is None
                if owner:
                    fut = self._inflight[key] = _Inflight()
            if not owner:
                fut.done.wait()
                if fut.error is not None:
                    raise fut.error
                continue  # it is cached now: take it as a hit
            try:
                entry = self._build(spec, key, identity)
            except BaseException as ex:
                fut.error = ex
                with self._lock:
                    self._inflight.pop(key, None)
                fut.done.set()
                raise
            with self._lock:
                for old in [o for o in self._entries.values() if o.spec == spec and o.key != key and o.pins == 0]:
                    self._drop(old)  # the file changed on disk: its old version goes
                entry.pins = 1
                self._entries[key] = entry
                self.misses += 1
                self.load_seconds += entry.load_seconds
                self._inflight.pop(key, None)
                if self.bridge is not None:
                    entry.patcher = self.bridge.register(entry, torch_modules(entry.value))
                self._enforce_budget(keep=key)
            fut.done.set()
            return entry

    def _release(self, entry: Entry) -> None:
        with self._lock:
            entry.pins = max(entry.pins - 1, 0)
            if entry.pins == 0 and entry.drop_after_use and self._entries.get(entry.key) is entry:
                self._drop(entry)
                dropped = True
            else:
                dropped = False
                if entry.key in self._entries:  # used just now: the most recently used entry
                    self._entries.move_to_end(entry.key)
                self._enforce_budget(keep=entry.key)
        if dropped:
            free_memory()

    def _build(self, spec: ModelSpec, key: str, identity: tuple) -> Entry:
        device = host.torch_device()
        t0 = time.perf_counter()
        out = spec.build(spec, device)
        dt = time.perf_counter() - t0
        loaded = out if isinstance(out, Loaded) else Loaded(out)
        mods = torch_modules(loaded.value)
        nbytes = loaded.nbytes if loaded.nbytes is not None else (module_bytes(mods) if mods else identity[0])
        dev = device_of(mods) if mods else str(loaded.meta.get("device", "cpu"))
        log.info("VisionKit: loaded %s %s in %.2fs (%.1f MB on %s)", spec.kind, spec.path, dt, nbytes / 2**20, dev)
        return Entry(key, spec, identity, loaded.value, dict(loaded.meta), int(nbytes), dev, dt)

    # ------------------------------------------------------------ devices and budget
    def _to_device(self, entry: Entry) -> None:
        if self.bridge is not None and entry.patcher is not None:
            self.bridge.load(entry)
        else:
            mods = torch_modules(entry.value)
            target = str(host.torch_device())
            if mods and entry.device != target and not entry.device.startswith(target):
                with self._lock:
                    for m in mods:
                        m.to(target)
                    entry.device = device_of(mods)
                    self._enforce_budget(keep=entry.key)
        entry.device = self._device_now(entry)

    def _device_now(self, entry: Entry) -> str:
        mods = torch_modules(entry.value)
        return device_of(mods) if mods else entry.device

    def _refresh_devices(self) -> None:
        for e in self._entries.values():
            e.device = self._device_now(e)

    def _bytes_on(self, prefix: str) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.device.startswith(prefix))

    def _enforce_budget(self, keep: str | None) -> None:
        """LRU: over budget, move accelerator models to the CPU, then drop what is over the CPU budget."""
        budget = self.budget()
        if self.bridge is not None:  # ComfyUI moves between devices; we bound what we hold in total
            while sum(e.nbytes for e in self._entries.values()) > budget:
                victim = self._lru_victim(None, keep)
                if victim is None:
                    break
                self._drop(victim)
                self.evictions += 1
            return
        dev = str(host.torch_device())
        tier = dev.split(":")[0]
        if tier != "cpu":
            while self._bytes_on(tier) > budget:
                victim = self._lru_victim(tier, keep)
                if victim is None:
                    break
                for m in torch_modules(victim.value):
                    m.to("cpu")
                victim.device = "cpu"
                self.evictions += 1
            budget = self.cpu_budget()
        while self._bytes_on("cpu") > budget:
            victim = self._lru_victim("cpu", keep)
            if victim is None:
                break
            self._drop(victim)
            self.evictions += 1

    def _lru_victim(self, prefix: str | None, keep: str | None) -> Entry | None:
        for e in self._entries.values():  # oldest first
            if e.key != keep and e.pins == 0 and (prefix is None or e.device.startswith(prefix)):
                return e
        return None

    def _drop(self, entry: Entry) -> None:
        self._entries.pop(entry.key, None)
        if self.bridge is not None and entry.patcher is not None:
            self.bridge.forget(entry)
        entry.patcher = None
        entry.value = None

    def _drop_released(self) -> None:
        """Entries ComfyUI unloaded (fallback path of comfy_bridge) go at the next cache access."""
        if self.bridge is None:
            return
        for e in [e for e in self._entries.values() if e.released and e.pins == 0]:
            self._drop(e)


_CACHE: ModelCache | None = None
_CACHE_LOCK = threading.Lock()


def get_cache() -> ModelCache:
    """The process-wide cache (created on first use; wired to ComfyUI when running inside it)."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            bridge = None
            if host.in_comfyui():
                from .comfy_bridge import ComfyBridge

                bridge = ComfyBridge.install()
            _CACHE = ModelCache(bridge=bridge)
            if bridge is not None:
                bridge.attach(_CACHE)
        return _CACHE
