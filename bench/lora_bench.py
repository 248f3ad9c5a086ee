"""LoRA: the same generation with and without an LCM-LoRA-shaped LoRA on one cached pipeline.

    .venv/bin/python bench/lora_bench.py [--quick|--smoke] [--device cuda]

The pipeline is lcm_bench's (random seeded weights from the shipped configs: the real SD1.5 UNet and VAE when
the device has ≥ 8 GB free, --quick the half-width SD1.5 UNet, --smoke a tiny one); the LoRA is a random
kohya-format file shaped like `lcm-lora-sdv1-5`: the 278 modules LCM-LoRA patches (attention q/k/v/out,
feed-forward, proj_in/out, ResNet conv1/conv2/time_emb_proj/conv_shortcut, down/upsamplers), rank 64, alpha 8,
fp16 (67 M parameters on the real layout). LCM Sampler node, 4 LCM steps, guidance 1, 256×256 on a CPU
(512×512 on CUDA), the pack's default LoRA application (in place, models/sd/lora_apply.py).

Each side runs in a fresh process (peak RSS is per process): build the pipeline, parse the LoRA, reset the
peak RSS (VmHWM), then one first run (it patches the UNet once) and `rounds` repeated runs.
Rows: peak RSS with / without (goal ≤ 1.15 on a CPU, ≤ 1.05 of accelerator memory on CUDA); repeated-run time
with / without (≤ 1.15 CPU, ≤ 1.05 CUDA), interleaved inside the LoRA process on its one cached UNet (with,
without, without, with, ...: the machine's load hits both sides alike; the runs right after a change are not
timed); the first run's patch time (sd_lora_apply.ensure timed) and the restore / re-patch times.

ComfyUI core side by side: bench/lora_core.py (rows from core_rows, its worker core_worker).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import harness
import measure
from harness import Row, goal_row, register
from lora_core import core_rows, core_worker

LCM_SUFFIXES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2",
                "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")


def lcm_lora_modules(unet) -> list[tuple[str, object]]:
    """The Linear / Conv2d modules lcm-lora-sdv1-5 patches (278 on the real SD1.5 UNet)."""
    import torch

    return [(n, m) for n, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(LCM_SUFFIXES)]


def write_lora(path: Path, unet_config: dict, rank: int = 64, alpha: float = 8.0) -> dict:
    """A random kohya LoRA (fp16) for the LCM-LoRA modules of a UNet built from `unet_config` on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    g = torch.Generator().manual_seed(15)
    sd, n_params = {}, 0
    for name, m in lcm_lora_modules(unet):
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(m, torch.nn.Conv2d):
            down = torch.randn(rank, m.in_channels, *m.kernel_size, generator=g) / (m.in_channels * m.kernel_size[0]
                                                                                   * m.kernel_size[1]) ** 0.5
            up = torch.randn(m.out_channels, rank, 1, 1, generator=g) * 0.01
        else:
            down = torch.randn(rank, m.in_features, generator=g) / m.in_features ** 0.5
            up = torch.randn(m.out_features, rank, generator=g) * 0.01
        sd.update({f"{key}.lora_down.weight": down.half(), f"{key}.lora_up.weight": up.half(),
                   f"{key}.alpha": torch.tensor(alpha)})
        n_params += down.numel() + up.numel()
    save_file(sd, str(path))
    return {"modules": len(sd) // 3, "params": n_params, "rank": rank}


# ---------------------------------------------------------------- the worker (one fresh process per side)
def worker(args) -> None:
    harness.setup_env(args.device)
    import gc

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lcm_bench

    pack = harness.import_pack()
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.sd import lora as sd_lora
    from visionkit_pack.models.sd import lora_apply as sd_lora_apply
    from visionkit_pack.models.sd.types import LoraRef

    load0 = os.getloadavg()[0]
    ctx = SimpleNamespace(tmp=Path(args.tmp))
    plain = handle = lcm_bench.make_handle(ctx, args.variant, args.dtype)
    comps = get_cache().load(handle.spec).value
    if args.lora:
        spec, lf = sd_lora.load_lora(args.lora)
        assert not sd_lora.check_fits(lf, comps), "the bench LoRA must fit every module"
        handle = handle.with_lora(LoraRef(spec, handle.arch, 1.0, 1.0, Path(args.lora).name))
    del comps
    cond = lcm_bench.make_conditioning(handle.arch, args.size)
    node = pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"]()
    ensure_s = []  # seconds of every call that changed the UNet's weights (patch or restore)
    real_ensure = sd_lora_apply.ensure

    def timed_ensure(module, key, *a):
        before = sd_lora_apply.applied(module)
        t = time.perf_counter()
        out = real_ensure(module, key, *a)
        if before != key:
            ensure_s.append(time.perf_counter() - t)
        return out

    sd_lora_apply.ensure = timed_ensure

    def run(h=None):
        out = node.sample(h or handle, cond, seed=7, steps=4, guidance=1.0, scheduler="lcm", width=args.size,
                          height=args.size, batch_size=1, denoise=1.0)[0]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    gc.collect()
    reset = measure.reset_peak_rss()
    base = measure.status_kb("VmRSS") * 1024
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    img = run()
    first = time.perf_counter() - t
    patch = list(ensure_s)
    times, plain_times, changes, cpu, plain_cpu = [], [], [], [], []
    for _ in range(args.rounds):
        t, c = time.perf_counter(), time.process_time()
        img = run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if args.lora:  # interleaved in this process: plain (restores), plain again, with (re-patches) ...
            n = len(ensure_s)
            run(plain)
            t, c = time.perf_counter(), time.process_time()
            plain_img = run(plain)
            plain_times.append(time.perf_counter() - t)
            plain_cpu.append(time.process_time() - c)
            run(handle)
            changes += ensure_s[n:]
    out = {"first": first, "times": times, "peak": measure.peak_rss_bytes(), "base": base, "reset": reset,
           "load": [load0, os.getloadavg()[0]],
           "thumb": img[0, ::4, ::4].float().tolist(), "backups": sd_lora_apply.backup_bytes(), "patch": patch,
           "plain_times": plain_times, "changes": changes,
           "cpu": cpu, "plain_cpu": plain_cpu}
    if args.lora:
        out["plain_thumb"] = plain_img[0, ::4, ::4].float().tolist()
    if args.device.startswith("cuda"):
        out["gpu_peak"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def _side(ctx, variant, dtype, size, rounds, lora: str | None) -> dict:
    args = ["--worker", "--tmp", str(ctx.tmp), "--variant", variant, "--dtype", dtype, "--size", str(size),
            "--rounds", str(rounds), "--device", ctx.device, "--threads", str(ctx.threads or 0)]
    if lora:
        args += ["--lora", lora]
    return harness.run_worker(Path(__file__).resolve(), args, timeout=1800)


@register("lora", "LoRA (LCM-LoRA shaped) in place: memory and time with / without, first-run patch cost")
def bench(ctx) -> list[Row]:
    import lcm_bench

    variant = lcm_bench.pick_variant(ctx)
    size = ctx.pick(512 if ctx.cuda else 256, 128, 64)
    rounds = ctx.pick(3, 3, 1)
    dtype = "fp16" if ctx.cuda else "fp32"
    _arch, ucfg, _vcfg = lcm_bench.unet_vae_configs(variant)
    lora = ctx.tmp / f"lcm-shaped-lora-{variant}.safetensors"
    shape = write_lora(lora, ucfg, rank=ctx.pick(64, 64, 4))
    desc = (f"{variant} UNet ({dtype}, random weights), kohya LoRA on {shape['modules']} modules, rank "
            f"{shape['rank']}, {shape['params'] / 1e6:.0f}M params; LCM Sampler 4 steps, guidance 1, {size}×{size}")
    ctx.log(f"lora: {desc}")
    plain = _side(ctx, variant, dtype, size, rounds, None)
    ctx.log(f"lora: without: first {plain['first']:.1f} s, runs {plain['times']}, peak {plain['peak'] >> 20} MB")
    withl = _side(ctx, variant, dtype, size, rounds, str(lora))
    ctx.log(f"lora: with: first {withl['first']:.1f} s, runs {withl['times']}, peak {withl['peak'] >> 20} MB")
    import torch

    t0, t1 = min(withl["plain_times"]), min(withl["times"])
    c0, c1 = min(withl["plain_cpu"]), min(withl["cpu"])
    diff = (torch.tensor(withl["thumb"]) - torch.tensor(plain["thumb"])).abs().max().item()
    same = torch.equal(torch.tensor(withl["plain_thumb"]), torch.tensor(plain["thumb"]))
    mb = 1 << 20
    rows = [
        goal_row("LoRA (LCM-LoRA shaped): peak RSS with / without", withl["peak"] / plain["peak"], "<=", 1.15, "×",
                 f"{withl['peak'] / mb:.0f} MB vs {plain['peak'] / mb:.0f} MB (VmHWM of each process from after the "
                 f"pipeline was built; RSS then {withl['base'] / mb:.0f} / {plain['base'] / mb:.0f} MB); weight "
                 f"backups: {withl['backups']['disk'] / mb:.0f} MB in the spill file, "
                 f"{withl['backups']['ram'] / mb:.0f} MB in RAM; {desc}"),
        goal_row("LoRA (LCM-LoRA shaped): repeated run with / without" + ("" if ctx.cuda else ", CPU time"),
                 t1 / t0 if ctx.cuda else c1 / c0, "<=", 1.05 if ctx.cuda else 1.15,
                 "×", ("" if ctx.cuda else f"process CPU time {c1:.2f} s vs {c0:.2f} s (on a shared CPU the wall time "
                       f"swings with other work; CPU time much less); wall ") +
                 f"{t1:.2f} s vs {t0:.2f} s = {t1 / t0:.2f}× (min of {rounds}, interleaved in one process on one cached UNet: "
                      f"with, without (restores), without, with (re-patches), ...; the timed runs change no weight); "
                      f"without the LoRA in its own process {min(plain['times']):.2f} s; the LoRA changes the image by "
                      f"up to {diff:.3f} (0..1 scale); after it is taken off the image equals the other process's: "
                      f"{'yes' if same else 'NO'}; load average {withl['load'][0]:.2f} → {withl['load'][1]:.2f} "
                      f"during the interleaved process"),
        Row("LoRA (LCM-LoRA shaped): first-run patch time", sum(withl["patch"]), "—", None, "s",
            f"in-place patch of {shape['modules']} weights with backups (sd_lora_apply.ensure, timed inside the first "
            f"run, {withl['first']:.2f} s in all; a repeated run {t1:.2f} s); later stack changes (restore or "
            f"re-patch): {', '.join(f'{x:.2f}' for x in withl['changes']) or '-'} s"),
    ]
    if ctx.cuda and "gpu_peak" in withl:
        rows.append(goal_row("LoRA: peak accelerator memory with / without", withl["gpu_peak"] / plain["gpu_peak"],
                             "<=", 1.05, "×", f"{withl['gpu_peak'] / mb:.0f} MB vs {plain['gpu_peak'] / mb:.0f} MB"))
    rows += core_rows(ctx, variant, dtype, size, lora, desc, plain, withl)
    return rows


def main() -> int:
    if "--worker" not in sys.argv:
        return harness.main_single("lora")
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--tmp", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lora")
    p.add_argument("--core", action="store_true", help="ComfyUI core side by side (core_worker)")
    p.add_argument("--task", default="time")
    p.add_argument("--comfy")
    p.add_argument("--folder")
    a = p.parse_args()
    core_worker(a) if a.core else worker(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
