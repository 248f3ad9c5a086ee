"""Upscale benchmark: VisionKit's tiled Real-ESRGAN engine vs RealESRGANer.enhance, same image, same tile.

    .venv/bin/python bench/upscale_bench.py            # CPU, a few minutes on 2 cores
    .venv/bin/python bench/upscale_bench.py --quick    # smaller images, for a smoke run

Both run the real RealESRGAN_x4plus architecture (RRDBNet, 23 blocks, 64 features, 32 growth) with
random (seeded) weights saved to a temporary .pth, which each side loads itself (the pack through its
cache, RealESRGANer from model_path). Printed:

- time: best of N interleaved runs per side, on a 1x and a 4x-area image (goal: pack / RealESRGANer <= 1.0);
- peak memory: the growth of the process's peak RSS during one run, in a fresh process per measurement
  (the kernel's high-water mark is reset just before the run), at 1x and 4x area (goal: growth 4x/1x
  <= 1.3); for the pack also without its output buffer (what the tiling itself costs);
- strip: tiny weights, an 8192x64 vs a 1024x64 strip: the pack's working memory beyond its output buffer
  must not grow with the image (goal <= 1.0x, up to measuring noise of a few hundred KB);
- the pixels each side runs through the network: the pack cuts an axis into the fewest equal windows,
  Real-ESRGAN into a fixed grid whose last tile is small, so at some sizes the pack simply reads less.

The machine may be shared: times are the best of interleaved runs, and still move by a few percent.

GPU numbers only from a machine that has one (--device cuda: fp16 both sides, torch's peak allocated).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "visionkit_pack"

X4PLUS = {"num_block": 23, "num_feat": 64, "num_grow_ch": 32, "scale": 4}  # RealESRGAN_x4plus
TINY = {"num_block": 2, "num_feat": 8, "num_grow_ch": 4, "scale": 4}


def import_pack():
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod


def setup_env(device: str) -> None:
    os.environ["VISIONKIT_STANDALONE"] = "1"
    os.environ["VISIONKIT_DEVICE"] = device
    os.environ.setdefault("VISIONKIT_CACHE_GB", "8")


# ---------------------------------------------------------------- building blocks
def write_weights(path: Path, dims: dict, seed: int = 0) -> None:
    import torch

    import_pack()
    from visionkit_pack.models.compat import import_basicsr_archs

    RRDBNet, _ = import_basicsr_archs()
    torch.manual_seed(seed)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, **dims)
    with torch.no_grad():  # basicsr's scaled init leaves the body nearly idle; make every weight count
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.save({"params_ema": net.state_dict()}, path)


def make_image(h: int, w: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    return (x.permute(0, 2, 3, 1) * 255).round().div(255).contiguous()


class Pack:
    name = "VisionKit"

    def __init__(self, weights: str, tile: int, pad: int, device: str):
        import_pack()
        from visionkit_pack.models import upscale

        self.u = upscale
        self.spec, _ = upscale.load_upscale_model(weights)
        self.tile, self.pad = tile, pad

    def prepare(self, image):
        return image

    def run(self, image):
        return self.u.upscale_image(self.spec, image, tile=self.tile, tile_pad=self.pad)


class Reference:
    name = "RealESRGANer"

    def __init__(self, weights: str, tile: int, pad: int, device: str):
        import torch

        import_pack()
        from visionkit_pack.models.compat import ensure_basicsr_importable
        from visionkit_pack.models.upscale import (
            build_network,
            detect_arch,
            load_state_dict,
        )

        ensure_basicsr_importable()
        from realesrgan import RealESRGANer

        arch = detect_arch(load_state_dict(weights))
        self.up = RealESRGANer(scale=arch.scale, model_path=weights, model=build_network(arch), tile=tile,
                               tile_pad=pad, pre_pad=0, half=device.startswith("cuda"),
                               device=torch.device(device))

    def prepare(self, image):
        from visionkit_pack.models import imageops

        return imageops.image_to_bgr_list(image)[0]

    def run(self, bgr):
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tile
            out, _ = self.up.enhance(bgr, outscale=None)
        return out


IMPLS = {"pack": Pack, "ref": Reference}


# ---------------------------------------------------------------- memory (one fresh process per number)
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def worker(args) -> None:
    """Child process: set up, then measure the peak memory growth of one run."""
    import torch

    setup_env(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    impl = IMPLS[args.impl](args.weights, args.tile, args.pad, args.device)
    impl.run(impl.prepare(make_image(min(args.h, 2 * args.tile), min(args.w, 2 * args.tile))))  # warm-up
    x = impl.prepare(make_image(args.h, args.w))
    cuda = args.device.startswith("cuda")
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset = _reset_peak()
        base = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    out = impl.run(x)
    dt = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        peak, how = torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"
    else:
        import resource

        peak = _status_kb("VmHWM") * 1024 if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        how = "VmHWM after reset" if reset else "ru_maxrss (no reset: includes set-up)"
    out_bytes = int(out.numel() * out.element_size()) if hasattr(out, "element_size") else int(out.nbytes)
    print(json.dumps({"growth": peak - base, "out_bytes": out_bytes, "seconds": dt, "how": how}))


def measure_memory(impl: str, weights: str, h: int, w: int, tile: int, pad: int, device: str,
                   threads: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--threads", str(threads), "--weights", weights,
           "--h", str(h), "--w", str(w), "--tile", str(tile), "--pad", str(pad), "--device", device]
    # A fixed malloc mmap threshold: every buffer over 128 KB is mapped on allocation and unmapped on
    # free, so the RSS follows the live memory (glibc otherwise keeps freed buffers for reuse).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory worker failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- time (interleaved, in this process)
def measure_time(impls: dict, image, repeats: int) -> dict:
    prepared = {k: v.prepare(image) for k, v in impls.items()}
    best = {k: float("inf") for k in impls}
    order = list(impls)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            impls[k].run(prepared[k])
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def network_pixels(h: int, w: int, tile: int, pad: int) -> tuple[int, int]:
    """Input pixels each side runs through the network for one image (x4: no pad to a multiple)."""
    import_pack()
    from visionkit_pack.models.upscale import plan_axis

    def ours(n):
        p = plan_axis(n, tile, pad)
        return p.count * p.window

    def ref(n):  # RealESRGANer.tile_process: tiles on a fixed grid, the last one smaller, pads clipped
        return sum(min(o + tile + pad, n) - max(o - pad, 0) for o in range(0, n, tile))

    return ours(h) * ours(w), ref(h) * ref(w)


def mb(n: float) -> str:
    return f"{n / 2**20:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small images (smoke run, not the numbers)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--pad", type=int, default=10)
    ap.add_argument("--worker", choices=sorted(IMPLS))
    ap.add_argument("--weights")
    ap.add_argument("--h", type=int)
    ap.add_argument("--w", type=int)
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        return worker(args)

    setup_env(args.device)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base_hw = (32, 48) if args.quick else (80, 112)
    sizes = {"1x": base_hw, "4x": (base_hw[0] * 2, base_hw[1] * 2)}
    strip_sizes = {"1024x64": (64, 1024), "8192x64": (64, 8192)}
    tile, pad = args.tile, args.pad
    with tempfile.TemporaryDirectory(prefix="vk_bench_") as tmp:
        x4 = str(Path(tmp) / "RealESRGAN_x4plus_random.pth")
        tiny = str(Path(tmp) / "tiny_x4.pth")
        write_weights(Path(x4), X4PLUS)
        write_weights(Path(tiny), TINY, seed=1)
        print(f"VisionKit upscale bench: device {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; RRDBNet x4plus dims (23 blocks, 64 feat, 32 grow), random "
              f"weights; tile {tile}, tile_pad {pad}, pre_pad 0")

        impls = {k: cls(x4, tile, pad, args.device) for k, cls in IMPLS.items()}
        measure_time(impls, make_image(32, 32), 1)  # warm-up
        times = {}
        for label, (h, w) in sizes.items():
            times[label] = measure_time(impls, make_image(h, w), args.repeats)
            t = times[label]
            print(f"  time {label} ({w}x{h}): VisionKit {t['pack']:.2f} s, RealESRGANer {t['ref']:.2f} s",
                  flush=True)
        del impls
        gc.collect()

        mem = {(k, label): measure_memory(k, x4, h, w, tile, pad, args.device, args.threads)
               for label, (h, w) in sizes.items() for k in IMPLS}
        strip = {(k, label): measure_memory(k, tiny, h, w, 64, pad, args.device, args.threads)
                 for label, (h, w) in strip_sizes.items() for k in IMPLS}

    def row(what, ours, ref, goal):
        ref_s = f"{ref:12.2f}" if ref is not None else " " * 12
        print(f"| {what:<54} | {ours:9.2f} | {ref_s} | {goal:<6} |")

    print()
    print(f"| {'measure (' + args.device + ')':<54} | VisionKit | RealESRGANer | goal   |")
    print(f"|{'-' * 56}|-----------|--------------|--------|")
    for label in sizes:
        row(f"time ratio VisionKit / RealESRGANer, {label} area", times[label]["pack"] / times[label]["ref"],
            None, "<= 1.0")
    g_pack = mem[("pack", "4x")]["growth"] / mem[("pack", "1x")]["growth"]
    g_ref = mem[("ref", "4x")]["growth"] / mem[("ref", "1x")]["growth"]
    row("peak memory growth, 4x / 1x area", g_pack, g_ref, "<= 1.3")
    w1 = mem[("pack", "1x")]["growth"] - mem[("pack", "1x")]["out_bytes"]
    w4 = mem[("pack", "4x")]["growth"] - mem[("pack", "4x")]["out_bytes"]
    row("  the same beyond the output buffer", w4 / w1, None, "")
    s1, s8 = strip[("pack", "1024x64")], strip[("pack", "8192x64")]
    ws1, ws8 = s1["growth"] - s1["out_bytes"], s8["growth"] - s8["out_bytes"]
    r1, r8 = strip[("ref", "1024x64")]["growth"], strip[("ref", "8192x64")]["growth"]
    row("tiny weights: working memory, 8192x64 / 1024x64 strip", ws8 / ws1, r8 / r1, "<= 1.0")
    print()
    print("pixels the network reads (tile plan): VisionKit's equal windows vs Real-ESRGAN's grid")
    for label, (h, w) in sizes.items():
        ours, ref = network_pixels(h, w, tile, pad)
        print(f"  {label} ({w}x{h}): VisionKit {ours} px, RealESRGANer {ref} px ({ours / ref:.2f}x)")
    print()
    print("peak memory growth during one run (fresh process each):")
    for (k, label), m in list(mem.items()) + list(strip.items()):
        name = "VisionKit   " if k == "pack" else "RealESRGANer"
        extra = f", beyond output {mb(m['growth'] - m['out_bytes'])}" if k == "pack" else ""
        print(f"  {name} {label:8s}: peak +{mb(m['growth'])} (output {mb(m['out_bytes'])}{extra}), "
              f"{m['seconds']:.2f} s")
    print(f"  measured with: {next(iter(mem.values()))['how']}; RealESRGANer's figure includes its own "
          "float copies of the output and its uint8 result; the strip's RealESRGANer column is peak growth")


if __name__ == "__main__":
    main()
