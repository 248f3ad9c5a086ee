"""Applying a LoRA stack to a cached model: patched in place once per change, restored bit-identically.

The mechanism (chosen by measuring; figures in "Why" below): a module (UNet, text encoder) holds at most one
applied stack. `ensure(module, key, plan)` makes its weights equal to originals + the plan's deltas:
- the same key as the one applied: nothing to do (a repeated run with the same LoRAs and strengths costs a
  dictionary lookup);
- otherwise every weight patched now is put back from its backup (a byte copy: never `W -= ΔW`), then each
  weight of the plan is backed up (once; kept while it stays patched) and overwritten in place with
  W + Σ strength · alpha/rank · (up @ down), computed as before: in float32 on the weight's device, one weight
  at a time, then cast to the weight's dtype. The Parameter objects stay the same; only their values change.
- backups hold only the patched weights and never sit on the accelerator: for a model on a GPU they are CPU
  copies (ComfyUI's ModelPatcher does the same); for a model on the CPU they are written to an anonymous spill
  file (`tempfile.TemporaryFile`, deleted by the OS when closed or when the process dies) and read straight
  back into the weight's memory on restore, so a CPU run does not hold a second copy of the patched weights
  in RAM. VISIONKIT_LORA_BACKUP=ram|disk forces one place (auto: as said); VISIONKIT_LORA_BACKUP_DIR sets the
  spill folder (default: the system temp folder; where that is a RAM disk (tmpfs) the spill costs RAM after
  all, so point it at a disk). A failed spill write (disk full) falls back to RAM.

Who may touch the weights: every user of a patchable module calls `ensure` with the stack it wants (the
sampler and the prompt encoder do, an empty stack included: that restores the originals) while holding the
module's lock (models.core.patching.model_lock, which RunPatches holds for the whole run). So two prompts that
share a cached UNet with different stacks each get their own weights, one after the other.

Failure and cancel: the state records which weights are patched as they are written. If patching fails or is
interrupted half-way, every weight written so far is put back and the state says "originals"; a run that
fails or is cancelled after `ensure` returned leaves the stack applied and recorded (the next run with another
stack restores it). If a restore itself fails, the state says "unknown" and the next `ensure` tries the
restore again (`PatchError` says to reload the model if it keeps failing).

Memory: the state lives in a weak dictionary keyed by the module, so when the cache drops a model (LRU,
`POST /visionkit/cache/purge`, ComfyUI's `/free`), its backups and spill file go with it. `release(module)`
restores and drops them explicitly.

Why (measured on this 2-core CPU machine, real SD1.5 UNet layout in fp32 with random weights, an LCM-LoRA
shaped kohya LoRA: 278 modules, rank 64; bench/lora_bench.py):
- per-run W + ΔW copies (the previous design): the run holds the UNet plus a patched copy of most of it, and
  pays the 278 delta matmuls on every run (issue 15: 2.4× peak RSS, 1.46× warm run time);
- PEFT-style low-rank layers (W x + s · up(down(x)) in each forward): no copy, but every forward pays the
  low-rank path: +24 GFLOP on the UNet's 180 GFLOP at 256×256 (+13.3 %), +94 on 803 at 512×512 (+11.7 %)
  (torch.utils.flop_counter on the meta-device UNet plus the 278 rank-64 paths; the rank-64 3×3 convs of the
  320-channel high-resolution blocks cost most), on every step of every run, on the accelerator too: over
  the 1.05× goal by construction;
- in place with backups (this module): the forward runs the same dense weights, so a repeated run costs what a
  run without the LoRA costs (tiny UNet, 15 interleaved pairs: CPU time min 0.077 s with / 0.097 s without);
  peak RSS of the real SD1.5 run 4871 MB with the LoRA vs 4878 MB without (0.998×; 3269 MB of originals in
  the spill file, none in RAM); the patch is paid once per change: 10.9 s for the half-width SD1.5 UNet
  (278 weights, 836 MB spilled) on this loaded machine, a later re-patch 9-13 s (the float32 matmuls; the
  backups are kept), a restore 0.2-0.9 s; accelerator memory unchanged (backups on the CPU; not measured here,
  no GPU was available).
The in-place mechanism is the only one that keeps a repeated run at the no-LoRA time, so it is the one used.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable

import torch

from ..core.patching import PatchError, model_lock

log = logging.getLogger("visionkit")

ORIGINALS: tuple = ()  # the key of "no LoRA applied"


class _Backup:
    """The original value of one weight: a CPU tensor, or (offset, nbytes) in the state's spill file."""

    __slots__ = ("ram", "offset", "nbytes", "dtype", "shape")

    def __init__(self, ram, offset, nbytes, dtype, shape):
        self.ram, self.offset, self.nbytes, self.dtype, self.shape = ram, offset, nbytes, dtype, shape


class _State:
    def __init__(self):
        self.key: tuple | None = ORIGINALS  # None: unknown (a restore failed)
        self.count = 0  # weights the applied stack patches
        self.backups: dict[str, _Backup] = {}
        self.patched: set[str] = set()  # weights whose values differ from their backup now
        self.spill = None
        self.spill_end = 0

    def drop(self) -> None:
        """Forget every backup and close the spill file (the model is gone or restored)."""
        self.backups.clear()
        self.patched.clear()
        self.close_spill()

    def close_spill(self) -> None:
        if self.spill is not None:
            try:
                self.spill.close()
            finally:
                self.spill, self.spill_end = None, 0


_STATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()
_WARNED: set = set()


def _state(module) -> _State:
    with _GUARD:
        st = _STATES.get(module)
        if st is None:
            st = _STATES[module] = _State()
            weakref.finalize(module, st.drop)  # the cache dropped the model: close the spill file now
        return st


def backup_mode() -> str:
    mode = os.environ.get("VISIONKIT_LORA_BACKUP", "auto").strip().lower() or "auto"
    return mode if mode in ("auto", "ram", "disk") else "auto"


def _byte_view(t: torch.Tensor):
    """A writable uint8 numpy view of a contiguous CPU tensor's memory (no copy)."""
    return t.detach().reshape(-1).view(torch.uint8).numpy()


def _backup(st: _State, w: torch.Tensor, name: str) -> _Backup:
    t = w.detach()
    nbytes = t.numel() * t.element_size()
    mode = backup_mode()
    to_disk = mode == "disk" or (mode == "auto" and t.device.type == "cpu")
    if to_disk and t.device.type == "cpu" and t.is_contiguous():
        try:
            if st.spill is None:
                folder = os.environ.get("VISIONKIT_LORA_BACKUP_DIR") or None
                st.spill = tempfile.TemporaryFile(prefix="visionkit-lora-", dir=folder)
            st.spill.seek(st.spill_end)
            st.spill.write(memoryview(_byte_view(t)))
            b = _Backup(None, st.spill_end, nbytes, t.dtype, tuple(t.shape))
            st.spill_end += nbytes
            return b
        except OSError as ex:  # disk full, unwritable folder: RAM is still exact
            if "spill" not in _WARNED:
                _WARNED.add("spill")
                log.warning("VisionKit LoRA: cannot write weight backups to disk (%s); keeping them in RAM", ex)
    return _Backup(t.to("cpu", copy=True), 0, nbytes, t.dtype, tuple(t.shape))


def _put_back(st: _State, w: torch.Tensor, b: _Backup, name: str) -> None:
    t = w.detach()
    if t.dtype != b.dtype or tuple(t.shape) != b.shape:
        raise PatchError(f"{name} changed dtype or shape while a LoRA was applied ({b.dtype} {b.shape} → "
                         f"{t.dtype} {tuple(t.shape)}); reload the model")
    if b.ram is not None:
        t.copy_(b.ram)
        return
    st.spill.seek(b.offset)
    if t.device.type == "cpu" and t.is_contiguous():
        got = st.spill.readinto(memoryview(_byte_view(t)))
    else:
        buf = bytearray(b.nbytes)
        got = st.spill.readinto(buf)
        t.copy_(torch.frombuffer(buf, dtype=torch.uint8).view(b.dtype).reshape(b.shape))
    if got != b.nbytes:
        raise PatchError(f"the saved original of {name} could not be read back ({got} of {b.nbytes} bytes)")


def _restore_all(module, st: _State) -> None:
    errors = []
    with torch.no_grad():
        for name in sorted(st.patched):
            try:
                _put_back(st, module.get_parameter(name), st.backups[name], name)
                st.patched.discard(name)
            except Exception as ex:  # keep restoring the rest
                errors.append(f"{name}: {ex}")
    if errors:
        st.key = None
        raise PatchError(f"could not restore {len(errors)} weights of {type(module).__name__} after a LoRA "
                         f"({'; '.join(errors[:3])}); reload the model (Free model cache)")
    st.key, st.count = ORIGINALS, 0


def _drop_backups(st: _State, keep) -> None:
    for name in [n for n in st.backups if n not in keep]:
        del st.backups[name]
    if not any(b.ram is None for b in st.backups.values()):
        st.close_spill()


def ensure(module, key: tuple, plan: Callable[[], dict], delta: Callable) -> int:
    """Make `module`'s weights the originals + the stack identified by `key`; the number of patched weights.

    `plan()` (called only when the stack changes) gives {parameter name: [term, ...]} in application order;
    `delta(term, weight)` gives that term's float32 ΔW (strength and scale applied) on the weight's device.
    The caller should hold model_lock(module) for as long as it uses the weights (RunPatches does).
    """
    with model_lock(module):
        st = _state(module)
        if st.key is not None and st.key == key:
            return st.count
        if st.patched:
            _restore_all(module, st)
        if key == ORIGINALS:
            _drop_backups(st, ())
            return 0
        try:
            wanted = plan()
            with torch.no_grad():
                for name, terms in wanted.items():
                    w = module.get_parameter(name)
                    if name not in st.backups:
                        st.backups[name] = _backup(st, w, name)
                    d = None
                    for term in terms:
                        x = delta(term, w)
                        d = x if d is None else d + x
                    new = (w.detach().float() + d).to(w.dtype)
                    del d
                    st.patched.add(name)
                    w.detach().copy_(new)
                    del new
            _drop_backups(st, wanted)
            st.key, st.count = key, len(wanted)
        except BaseException:
            st.key = None
            _restore_all(module, st)  # raises PatchError (state "unknown") if even that fails
            _drop_backups(st, ())
            raise
        return st.count


def applied(module) -> tuple | None:
    """The key of the stack applied to `module` (ORIGINALS when none; None when unknown)."""
    with _GUARD:
        st = _STATES.get(module)
    return ORIGINALS if st is None else st.key


def release(module) -> None:
    """Put `module`'s original weights back and drop every backup (spill file included)."""
    with model_lock(module):
        with _GUARD:
            st = _STATES.get(module)
        if st is None:
            return
        if st.patched:
            _restore_all(module, st)
        _drop_backups(st, ())
        st.key, st.count = ORIGINALS, 0
        with _GUARD:
            _STATES.pop(module, None)


def backup_bytes(*modules) -> dict:
    """Bytes of original weights held as backups: {"ram": n, "disk": n} for `modules` (default: every live one)."""
    with _GUARD:
        states = [_STATES[m] for m in modules if m in _STATES] if modules else list(_STATES.values())
    out = {"ram": 0, "disk": 0}
    for st in states:
        for b in list(st.backups.values()):
            out["ram" if b.ram is not None else "disk"] += b.nbytes
    return out
