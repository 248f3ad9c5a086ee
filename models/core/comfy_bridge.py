"""How the shared cache lives inside ComfyUI's memory management (only imported inside ComfyUI).

The cache (cache.py) creates the bridge and calls it; the bridge imports nothing of the pack and calls the
cache back only through its public `purge()` and `mark_released(key)`.

The mechanism, in full:

1. Every cache entry gets one `comfy.model_patcher.ModelPatcher`. Its model is a small holder module
   (`VisionKitModel`) whose children are the entry's torch modules, so ComfyUI's bookkeeping attributes
   land on the holder and never on the cached model. ONNX sessions get a holder with no parameters and
   the file's size, so ComfyUI still accounts for them and unloads them.
2. When a node uses a model, `load_models_gpu([patcher], force_full_load=True)` moves it to ComfyUI's
   device (diffusers / segment-anything modules have no comfy.ops casting, so no partial loading);
   under memory pressure ComfyUI may later move it back to its offload device (RAM). The entry stays:
   the next use brings it back without reading the file again.
3. ComfyUI keeps only weak references to what it manages, and `/free` ("Unload models") only unloads
   models from its device and forgets its own references. So the pack wraps
   `comfy.model_management.unload_all_models` once: after ComfyUI has unloaded everything (the `/free`
   route, ComfyUI's out-of-memory handler and --disable-smart-memory all go through it), the pack
   purges its own cache. With no strong reference left, the models are freed: RAM under --cpu, VRAM on
   a GPU, ONNX sessions included; ComfyUI's own finalizer drops its bookkeeping entries.
4. The wrap is checked each time it matters, not trusted once: before every load (`ensure_wrapped`
   wraps again when something replaced `unload_all_models` behind the pack's back, e.g. another custom
   node or a ComfyUI reload) and in the ON_DETACH callback below.
5. Fallback, should a future ComfyUI stop calling that function (or the wrap be gone when an unload
   happens): every patcher has an ON_DETACH callback that marks its entry released; released entries are
   dropped at the next cache access.
6. Working memory: newer ComfyUI (dynamic VRAM, on by default on NVIDIA) keeps only its default reserve
   free beside the models it loads unless a load says how much the run itself needs. Every load passes
   `memory_required`: an estimate per model kind (`working_memory`) of the activations the pack's engines
   allocate beside the weights (UNet attention at 1024 px, SAM's image encoder, upscale tiles).
"""
from __future__ import annotations

import logging
import threading

import torch

log = logging.getLogger("visionkit")


class VisionKitModel(torch.nn.Module):
    """The module ComfyUI manages for one cache entry (named so ComfyUI's log says what it loads)."""

    def __init__(self, modules):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)


GiB = 1 << 30
MiB = 1 << 20
# kind -> (floor, share of the weights' bytes): the working memory a run of that model needs beside its
# weights. Rough upper estimates for batch 1 at the sizes the nodes default to (SDXL 1024 px with attention
# and the VAE decode; SAM vit_h at 1024 px; a Real-ESRGAN 512 px tile at x4 is 64 channels at 2048 px).
# Kinds not listed (LoRA, IP-Adapter, ControlNet: they run inside the pipeline's run) need no extra.
WORKING_MEMORY = {
    "sd_pipeline": (1536 * MiB, 0.5),
    "sd_vae": (512 * MiB, 1.0),
    "sam": (1 * GiB, 0.5),
    "upscale": (1 * GiB, 0.0),
    "grounding_dino": (512 * MiB, 0.25),
    "clip": (256 * MiB, 0.1),
    "clip_vision": (256 * MiB, 0.1),
}


def working_memory(kind: str, nbytes: int) -> int:
    """Bytes of working memory to ask ComfyUI for when loading a model of `kind` with `nbytes` of weights."""
    floor, share = WORKING_MEMORY.get(kind, (0, 0.0))
    return int(max(floor, share * max(int(nbytes), 0)))


def _chain(fn):
    """fn and every function it wraps (functools-style __wrapped__), outermost first."""
    seen = 0
    while fn is not None and seen < 32:
        yield fn
        fn = getattr(fn, "__wrapped__", None)
        seen += 1


class ComfyBridge:
    _instance: "ComfyBridge | None" = None
    _lock = threading.Lock()

    def __init__(self):
        import comfy.model_management as mm

        self.mm = mm
        self.cache = None
        self.wrapped = False
        self._by_patcher: dict[int, str] = {}

    @classmethod
    def install(cls) -> "ComfyBridge":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
                cls._instance._wrap_unload_all()
            return cls._instance

    def attach(self, cache) -> None:
        self.cache = cache

    def wrap_in_place(self) -> bool:
        """Whether calling comfy.model_management.unload_all_models now still runs the pack's purge: the
        pack's wrapper is the function there, or one that another wrapper declares it wraps (__wrapped__)."""
        fn = getattr(self.mm, "unload_all_models", None)
        return any(getattr(f, "_visionkit_wrapped", None) is self for f in _chain(fn))

    def ensure_wrapped(self) -> bool:
        """Check the wrap and wrap again when it is gone; True when it is in place afterwards."""
        if self.wrap_in_place():
            self.wrapped = True
            return True
        if self.wrapped:
            log.warning("VisionKit: comfy.model_management.unload_all_models was replaced after the pack wrapped "
                        "it; wrapping it again so that /free still releases the pack's models")
        self.wrapped = False
        self._wrap_unload_all()
        return self.wrapped

    def _wrap_unload_all(self) -> None:
        mm = self.mm
        original = getattr(mm, "unload_all_models", None)
        if original is None:
            log.warning("VisionKit: comfy.model_management.unload_all_models is missing; "
                        "models are released at the next use after /free instead of at once")
            self.wrapped = False
            return
        if self.wrap_in_place():
            self.wrapped = True
            return
        bridge = self

        def unload_all_models(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            finally:
                bridge.on_unload_all()

        unload_all_models._visionkit_wrapped = bridge
        unload_all_models.__wrapped__ = original
        mm.unload_all_models = unload_all_models
        self.wrapped = True

    def on_unload_all(self) -> None:
        if self.cache is not None:
            result = self.cache.purge()
            if result["purged"] or result["deferred"]:
                log.info("VisionKit: ComfyUI unloaded all models; released %d cached model(s)",
                         len(result["purged"]) + len(result["deferred"]))

    # ------------------------------------------------------------ per entry
    def register(self, entry, mods: list):
        """A ModelPatcher for a new cache entry whose torch modules are `mods` (none for an ONNX session)."""
        from comfy.model_patcher import ModelPatcher
        from comfy.patcher_extension import CallbacksMP

        if mods:
            load_device = self.mm.get_torch_device()
        else:  # an ONNX session: on the GPU only when its provider is
            load_device = torch.device("cuda") if str(entry.meta.get("device", "cpu")).startswith("cuda") \
                else torch.device("cpu")
        offload = self.mm.unet_offload_device() if mods else load_device
        patcher = ModelPatcher(VisionKitModel(mods), load_device=load_device, offload_device=offload,
                               size=max(int(entry.nbytes), 1))
        patcher.add_callback(CallbacksMP.ON_DETACH, self._on_detach)
        self._by_patcher[id(patcher)] = entry.key
        return patcher

    def load(self, entry) -> None:
        self.ensure_wrapped()
        self.mm.load_models_gpu([entry.patcher], memory_required=working_memory(entry.spec.kind, entry.nbytes),
                                force_full_load=True)

    def forget(self, entry) -> None:
        if entry.patcher is not None:
            self._by_patcher.pop(id(entry.patcher), None)

    def _on_detach(self, patcher, unpatch_all=True) -> None:
        if self.cache is None or self.wrap_in_place():
            return  # memory pressure: the model went to the offload device and stays cached
        self.wrapped = False  # the wrap is gone: this unload may be a /free, so the fallback engages
        key = self._by_patcher.get(id(patcher))
        if key:
            self.cache.mark_released(key)
