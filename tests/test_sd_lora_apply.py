"""LoRA application in place (models/sd/lora_apply.py): the same weights and images as the previous per-run
W + ΔW implementation (a copy of its math is kept here as the reference), patched once per stack and restored
bit-identically; one cached pipeline shared by runs with and without the LoRA, from two threads; a cancelled or
failed run; the cache purge releasing the backups."""
from __future__ import annotations

import gc
import sys
import threading
import weakref

import pytest
import torch
from vk_testing import import_pack, tiers
from vk_testing import tiny_sd_extras as X
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture, for the T2 test)

import_pack()
from visionkit_pack.models.core import host  # noqa: E402
from visionkit_pack.models.sd import lora as L  # noqa: E402
from visionkit_pack.models.sd import lora_apply as A  # noqa: E402
from visionkit_pack.models.sd import sampler as S  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.core.patching import RunPatches  # noqa: E402
from visionkit_pack.models.sd.pipeline import load_pipeline, use_pipeline  # noqa: E402
from visionkit_pack.models.sd.types import LoraRef  # noqa: E402

SETTINGS = S.SamplerSettings(steps=4, seed=5, width=64, height=64)


# ------------------------------------------------------------------ the previous implementation (reference)
def old_apply_loras(patches, comps, loras, which="unet"):
    """The per-run W + ΔW of the previous sd_lora.apply_loras, kept as the reference: all deltas summed in
    float32, then (W.float() + Σ).to(dtype) swapped in as new Parameters for the run (RunPatches.set_params)."""
    targets = ("unet",) if which == "unet" else ("text_encoder", "text_encoder_2")
    refs = [r for r in loras or () if (r.strength_unet if which == "unet" else r.strength_text) != 0]
    count = 0
    for comp in targets:
        module = getattr(comps, comp, None)
        if module is None or not refs:
            continue
        acc = {}
        for r in refs:
            s = float(r.strength_unet if which == "unet" else r.strength_text)
            lf = get_cache().load(r.spec).value
            for layer, target in L._resolve(lf, comp, module)[0]:
                w = module.get_parameter(f"{target}.weight")
                d = L.layer_delta(layer, w) * (s * layer.scale)
                acc[f"{target}.weight"] = (w, acc[f"{target}.weight"][1] + d) if f"{target}.weight" in acc else (w, d)
        if acc:
            with torch.no_grad():
                patches.set_params(module, {p: (w.detach().float() + d).to(w.dtype) for p, (w, d) in acc.items()})
            count += len(acc)
    return count


def use_old_implementation(monkeypatch):
    monkeypatch.setattr(L, "apply_lora_unet", lambda p, c, h: old_apply_loras(p, c, h.loras, "unet"))
    monkeypatch.setattr(L, "apply_lora_text", lambda p, c, h: old_apply_loras(p, c, h.loras, "text"))


def lref(models_dir, name, s_unet=1.0, s_text=1.0, arch="sd15"):
    return LoraRef(L.lora_spec(str(models_dir / "loras" / name)), arch, s_unet, s_text, name)


def tiny(models_dir, arch="sd15"):
    return load_pipeline(str(models_dir / "checkpoints" / f"tiny-{arch}.safetensors"))


def encode(pack, h):
    return pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(h, "a photo of a cat", "blurry")[0]


def params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


# ------------------------------------------------------------------ weights and images
@pytest.mark.parametrize("mode", ["disk", "ram"])
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_patched_weights_equal_the_previous_implementation_and_restore_bit_identically(
        pack, models_dir, monkeypatch, arch, mode):
    monkeypatch.setenv("VISIONKIT_LORA_BACKUP", mode)
    refs = [lref(models_dir, f"tiny-{arch}-lora-kohya.safetensors", 0.7, 1.3, arch),
            lref(models_dir, f"tiny-{arch}-lora-b.safetensors", -0.5, 0.25, arch)]
    old, new = X.tiny_base(arch), X.tiny_base(arch)
    originals = [params(m) for m in new.vk_modules()]
    objects = [dict(m.named_parameters()) for m in new.vk_modules()]
    with RunPatches(*old.vk_modules()) as p:
        n_old = old_apply_loras(p, old, refs, "unet") + old_apply_loras(p, old, refs, "text")
        want = [params(m) for m in old.vk_modules()]
    with RunPatches(*new.vk_modules()) as p:
        n_new = L.apply_loras(p, new, refs, "unet") + L.apply_loras(p, new, refs, "text")
    assert n_new == n_old > 0
    for m, w in zip(new.vk_modules(), want):
        for n, t in m.named_parameters():
            assert torch.equal(t, w[n]), n  # the same float32 math, bit for bit
    held = A.backup_bytes(*new.vk_modules())
    assert held[mode] > 0 and held["ram" if mode == "disk" else "disk"] == 0
    with RunPatches(*new.vk_modules()) as p:
        assert L.apply_loras(p, new, [], "unet") == 0 and L.apply_loras(p, new, [], "text") == 0
    for m, orig, objs in zip(new.vk_modules(), originals, objects):
        for n, t in m.named_parameters():
            assert t is objs[n] and torch.equal(t, orig[n]), n
    assert A.backup_bytes(*new.vk_modules()) == {"ram": 0, "disk": 0}


def test_images_equal_the_previous_implementation(pack, models_dir, monkeypatch):
    """Prompt Encode + LCM Sampler with the LoRA on UNet and text encoder: ≤ 1/255 from the per-run copies."""
    h = tiny(models_dir)
    (with_lora,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 0.8, 1.2)
    with monkeypatch.context() as mp:
        use_old_implementation(mp)
        cond_old = encode(pack, with_lora)
        want = S.generate(with_lora, cond_old, SETTINGS)
    with use_pipeline(h) as comps:
        assert A.applied(comps.unet) == A.ORIGINALS  # the reference runs left nothing behind
    cond = encode(pack, with_lora)
    assert (cond.prompt_embeds - cond_old.prompt_embeds).abs().max() <= 1e-6
    assert (cond.prompt_embeds - encode(pack, h).prompt_embeds).abs().max() > 1e-3  # the text-encoder LoRA applied
    got = S.generate(with_lora, cond, SETTINGS)
    assert (got - want).abs().max() <= 1 / 255
    plain = S.generate(h, encode(pack, h), SETTINGS)
    assert (plain - got).abs().max() > 1e-2  # the LoRA matters


# ------------------------------------------------------------------ once per change, shared, threads
def test_alternating_pipelines_on_one_cached_unet_patch_once_per_change(pack, models_dir, monkeypatch):
    h = tiny(models_dir)
    loader = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]()
    (a,) = loader.load(h, "for-tiny-sd15.safetensors", 1.0, 1.0)
    (b,) = loader.load(h, "for-tiny-sd15.safetensors", 0.5, 1.0)
    cond_plain, cond_a, cond_b = encode(pack, h), encode(pack, a), encode(pack, b)
    with use_pipeline(h) as comps:
        unet, snap = comps.unet, params(comps.unet)
    plans = []
    real_plan = L._plan
    monkeypatch.setattr(L, "_plan", lambda *args: plans.append(args[2]) or real_plan(*args))
    misses = get_cache().misses
    first = {"a": S.generate(a, cond_a, SETTINGS), "plain": S.generate(h, cond_plain, SETTINGS),
             "b": S.generate(b, cond_b, SETTINGS)}
    assert plans == ["unet", "unet"]  # a, b (plain restores: no plan)
    for name in ("a", "a", "plain", "a", "b", "b", "plain", "plain"):
        handle, cond = {"a": (a, cond_a), "b": (b, cond_b), "plain": (h, cond_plain)}[name]
        assert torch.equal(S.generate(handle, cond, SETTINGS), first[name]), name
    assert plans.count("unet") == 5  # one re-patch per change of stack or strength, none for a repeat
    assert get_cache().misses == misses  # never a reload
    assert (first["a"] - first["b"]).abs().max() > 1e-3 and (first["a"] - first["plain"]).abs().max() > 1e-2
    assert A.applied(unet) == A.ORIGINALS
    assert all(torch.equal(t, snap[n]) for n, t in unet.named_parameters())


def test_two_threads_with_different_stacks_each_get_their_own_images(pack, models_dir):
    h = tiny(models_dir)
    (a,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 1.0)
    want = {"a": S.generate(a, encode(pack, a), SETTINGS), "plain": S.generate(h, encode(pack, h), SETTINGS)}
    got, errors = {"a": [], "plain": []}, []

    def worker(name, handle):
        try:
            for _ in range(3):
                got[name].append(S.generate(handle, encode(pack, handle), SETTINGS))  # encoder and UNet
        except Exception as ex:  # pragma: no cover - reported below
            errors.append(ex)

    threads = [threading.Thread(target=worker, args=("a", a)), threading.Thread(target=worker, args=("plain", h))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and all(len(v) == 3 for v in got.values())
    for name, images in got.items():
        assert all(torch.equal(img, want[name]) for img in images), name


# ------------------------------------------------------------------ cancel, failure, release
class Interrupted(Exception):
    pass


def test_a_cancelled_run_leaves_its_stack_recorded_and_the_next_run_is_right(pack, models_dir, monkeypatch):
    h = tiny(models_dir)
    (a,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 0.0)
    cond = encode(pack, h)
    with_lora, plain = S.generate(a, cond, SETTINGS), S.generate(h, cond, SETTINGS)
    with use_pipeline(h) as comps:
        unet, snap = comps.unet, params(comps.unet)
    steps = []
    monkeypatch.setattr(host, "throw_if_cancelled", lambda: steps and (_ for _ in ()).throw(Interrupted("cancel")))
    with pytest.raises(Interrupted):
        S.generate(a, cond, SETTINGS, progress=lambda n, t: steps.append(n))
    monkeypatch.undo()
    assert steps == [1] and A.applied(unet) not in (A.ORIGINALS, None)  # patched, and recorded as such
    assert all(not e["in_use"] for e in get_cache().entries())
    assert torch.equal(S.generate(h, cond, SETTINGS), plain)
    assert all(torch.equal(t, snap[n]) for n, t in unet.named_parameters())
    assert torch.equal(S.generate(a, cond, SETTINGS), with_lora)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_patch_that_fails_half_way_puts_back_every_weight_it_wrote(pack, models_dir, monkeypatch, error):
    base = X.tiny_base("sd15")
    orig, objs = params(base.unet), dict(base.unet.named_parameters())
    refs = [lref(models_dir, "tiny-sd15-lora-kohya.safetensors")]
    calls = []
    real = L._term_delta

    def failing(term, w):
        calls.append(1)
        if len(calls) == 4:
            raise error("disk on fire")
        return real(term, w)

    monkeypatch.setattr(L, "_term_delta", failing)
    with pytest.raises(error, match="disk on fire"):
        with RunPatches(base.unet) as p:
            L.apply_loras(p, base, refs, "unet")
    assert A.applied(base.unet) == A.ORIGINALS and A.backup_bytes(base.unet) == {"ram": 0, "disk": 0}
    assert all(t is objs[n] and torch.equal(t, orig[n]) for n, t in base.unet.named_parameters())
    monkeypatch.setattr(L, "_term_delta", real)
    with RunPatches(base.unet) as p:
        assert L.apply_loras(p, base, refs, "unet") > 0  # and it works afterwards


def test_purging_the_cache_releases_the_patched_model_and_its_backups(pack, models_dir):
    h = tiny(models_dir)
    (a,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 1.0)
    S.generate(a, encode(pack, a), SETTINGS)
    with use_pipeline(h) as comps:
        unet, te = weakref.ref(comps.unet), weakref.ref(comps.text_encoder)
        spill = A._state(comps.unet).spill
        assert A.backup_bytes(comps.unet)["disk"] > 0 and A.backup_bytes(comps.text_encoder)["disk"] > 0
    del comps
    assert spill is not None and not spill.closed
    get_cache().purge()
    gc.collect()
    assert unet() is None and te() is None  # the models are gone, and with them their states
    assert spill.closed


# ------------------------------------------------------------------ T2: inside a real ComfyUI
def _spill_files(pid: int) -> list[str]:
    """The server's open, already deleted files: the LoRA backup spill file is one (an anonymous temporary file:
    O_TMPFILE where the OS has it, so it has no name to look for)."""
    import os

    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)") and "memfd:" not in target:
            out.append(target)
    return out


@pytest.mark.t2
@tiers.optional_mark(not sys.platform.startswith("linux"), "reads the server's open files from /proc (Linux only)")
def test_t2_free_closes_the_backups_of_a_patched_pipeline(comfy):  # noqa: F811
    """A LoRA workflow in ComfyUI (--cpu) leaves the UNet patched, its originals in a spill file; /free closes it."""
    from test_sd_sampler import lcm_chain

    before = _spill_files(comfy.proc.pid)
    comfy.run_prompt({**lcm_chain(seed=3, height=64), "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}})
    assert len(_spill_files(comfy.proc.pid)) > len(before), "the patched UNet keeps its originals in a spill file"
    comfy.free(until=lambda: not comfy.get_json("/visionkit/cache")["entries"], timeout=60)
    comfy.wait_until(lambda: _spill_files(comfy.proc.pid) == before, timeout=30, what="the spill file closed")
