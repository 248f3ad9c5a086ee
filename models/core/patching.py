"""Per-run patches on cached models: applied for one run, undone after it, even when the run fails.

A cached model is shared by every workflow that names the same file, so nothing a run needs (LoRA
weights, IP-Adapter attention processors, a ControlNet attachment, another scheduler) may stay on it.
`RunPatches` records how to undo each change as it is made and undoes them in reverse order when the
`with` block ends, whatever happened inside. Weight patches replace Parameter objects instead of
writing into them, so the restore puts back the very same tensors: bit-identical, and no copy of the
original weights is ever made.

While patched, the model is held under a per-model lock, so two threads that share a pipeline cannot
see each other's patches (ComfyUI runs one prompt at a time; tests and scripts may not).
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from .errors import VisionKitError

_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(obj) -> threading.RLock:
    """The lock that serialises patched runs on one cached object."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(obj)
        if lock is None:
            lock = _LOCKS[obj] = threading.RLock()
        return lock


class PatchError(VisionKitError):
    """An undo step failed; the message lists every failure (the model should be reloaded)."""


class RunPatches:
    """Context manager collecting undo steps.

    with RunPatches(unet) as p:
        p.set_attr(unet, "attn_processors_mode", "ip")
        p.set_params(unet, {"down.0.weight": new_weight})
        p.add(apply=lambda: ..., undo=lambda: ...)
        run()
    """

    def __init__(self, *locked: Any):
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._locks = [model_lock(o) for o in locked]
        self.active = False

    def __enter__(self) -> "RunPatches":
        for lock in self._locks:
            lock.acquire()
        self.active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.restore()
        finally:
            self.active = False
            for lock in reversed(self._locks):
                lock.release()
        return False

    # -------------------------------------------------------------- primitives
    def add(self, apply: Callable[[], Any] | None, undo: Callable[[], None], name: str = "patch") -> Any:
        """Run `apply` (if given) and remember `undo`. If `apply` raises, nothing is remembered."""
        result = apply() if apply is not None else None
        self._undo.append((name, undo))
        return result

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        missing = object()
        old = obj.__dict__.get(name, missing) if hasattr(obj, "__dict__") else getattr(obj, name, missing)

        def undo():
            if old is missing:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass
            else:
                setattr(obj, name, old)

        self.add(lambda: setattr(obj, name, value), undo, f"attr {name}")

    def set_item(self, mapping: dict, key: Any, value: Any) -> None:
        missing = object()
        old = mapping.get(key, missing)

        def undo():
            if old is missing:
                mapping.pop(key, None)
            else:
                mapping[key] = old

        self.add(lambda: mapping.__setitem__(key, value), undo, f"item {key}")

    def set_params(self, module, new_values: dict) -> None:
        """Give parameters of `module` (dotted names) new values for this run only."""
        import torch

        for dotted, value in new_values.items():
            owner_name, _, pname = dotted.rpartition(".")
            try:
                owner = module.get_submodule(owner_name) if owner_name else module
            except AttributeError:
                owner = None
            if owner is None or pname not in owner._parameters:
                raise KeyError(f"{type(module).__name__} has no parameter {dotted!r}")
            original = owner._parameters[pname]

            def apply(owner=owner, pname=pname, original=original, value=value):
                owner._parameters[pname] = torch.nn.Parameter(
                    value.to(device=original.device, dtype=original.dtype), requires_grad=original.requires_grad)

            def undo(owner=owner, pname=pname, original=original):
                owner._parameters[pname] = original

            self.add(apply, undo, f"param {dotted}")

    # -------------------------------------------------------------- restore
    def restore(self) -> None:
        errors = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                undo()
            except Exception as ex:  # keep undoing the rest
                errors.append(f"{name}: {ex}")
        if errors:
            raise PatchError("could not undo every per-run patch: " + "; ".join(errors))
