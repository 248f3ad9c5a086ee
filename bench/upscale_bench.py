"""Upscale: VisionKit's tiled Real-ESRGAN engine vs RealESRGANer.enhance, same image, same tile; peak memory
at 1× and 4× area; the loader's cold load vs a cached one.

    .venv/bin/python bench/upscale_bench.py [--quick|--smoke] [--device cuda]

Both sides run the real RealESRGAN_x4plus architecture (RRDBNet, 23 blocks, 64 features, 32 growth) with
random (seeded) weights saved to a .pth, which each side loads itself (the pack through its loader and
cache, RealESRGANer from model_path). --smoke uses a 2-block, 8-feature RRDBNet (numbers mean nothing).

- time: minimum of N interleaved runs per side (goal: VisionKit / RealESRGANer ≤ 1.0);
- peak memory: the growth of the process's peak RSS during one run, in a fresh process per measurement
  (the kernel's high-water mark is reset just before the run; glibc's mmap threshold is fixed so the RSS
  follows live memory), at 1× and 4× area (goal: growth 4×/1× ≤ 1.3); the pack's figure also without its
  output buffer (what the tiling itself costs); on CUDA: torch's peak allocated memory;
- strip: tiny weights, an 8192×64 vs a 1024×64 strip: the pack's working memory beyond its output buffer
  should stay flat (RealESRGANer's grows with the image);
- the pixels each side runs through the network: the pack cuts an axis into the fewest equal windows,
  Real-ESRGAN into a fixed grid whose last tile is small.
On CUDA both sides run fp16 (RealESRGANer half=True, the pack's dtype auto).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import sys
import time
from pathlib import Path

import harness
from harness import Row, goal_row, register

X4PLUS = {"num_block": 23, "num_feat": 64, "num_grow_ch": 32, "scale": 4}  # RealESRGAN_x4plus
TINY = {"num_block": 2, "num_feat": 8, "num_grow_ch": 4, "scale": 4}
TILE, PAD = 32, 10
MEM_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


# ---------------------------------------------------------------- building blocks
def write_weights(path: Path, dims: dict, seed: int = 0) -> None:
    import torch

    harness.import_pack()
    from visionkit_pack.models.compat import import_basicsr_archs

    RRDBNet, _ = import_basicsr_archs()
    torch.manual_seed(seed)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, **dims)
    with torch.no_grad():  # basicsr's scaled init leaves the body nearly idle; make every weight count
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        harness.import_pack()
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

        harness.import_pack()
        from visionkit_pack.models.compat import ensure_basicsr_importable
        from visionkit_pack.models.upscale import build_network, detect_arch, load_state_dict

        ensure_basicsr_importable()
        from realesrgan import RealESRGANer

        arch = detect_arch(load_state_dict(weights))
        self.up = RealESRGANer(scale=arch.scale, model_path=weights, model=build_network(arch), tile=tile,
                               tile_pad=pad, pre_pad=0, half=device.startswith("cuda"), device=torch.device(device))

    def prepare(self, image):
        from visionkit_pack.models import imageops

        return imageops.image_to_bgr_list(image)[0]

    def run(self, bgr):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tile
            out, _ = self.up.enhance(bgr, outscale=None)
        return out


IMPLS = {"pack": Pack, "ref": Reference}


# ---------------------------------------------------------------- memory (fresh processes)
def measure_cases(device: str, weights: str, cases: list[str]) -> list[dict]:
    """For each case "impl:h:w[:tile]", the peak memory growth of one run (the high-water mark reset before it)."""
    import torch

    cuda = device.startswith("cuda")
    results = []
    impls: dict = {}
    for case in cases:
        impl_name, h, w, *rest = case.split(":")
        h, w = int(h), int(w)
        tile = int(rest[0]) if rest else TILE
        key = (impl_name, tile)
        if key not in impls:
            impls[key] = IMPLS[impl_name](weights, tile, PAD, device)
        impl = impls[key]
        impl.run(impl.prepare(make_image(min(h, 2 * tile), min(w, 2 * tile))))  # warm-up
        x = impl.prepare(make_image(h, w))
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            reset = harness.reset_peak_rss()
            base = (harness.status_kb("VmRSS") or 0) * 1024
        t0 = time.perf_counter()
        out = impl.run(x)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if cuda:
            peak, how = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        else:
            peak = harness.peak_rss_bytes()
            how = "VmHWM after reset" if reset else "ru_maxrss (no reset: includes set-up)"
        out_bytes = int(out.numel() * out.element_size()) if hasattr(out, "element_size") else int(out.nbytes)
        results.append({"case": case, "growth": peak - base, "out_bytes": out_bytes, "seconds": dt, "how": how})
        del out, x
        gc.collect()
    return results


def worker(args) -> None:
    """Child process: measure_cases, printed as JSON."""
    import torch

    harness.setup_env(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"results": measure_cases(args.device, args.weights, args.cases)}))


def measure_memory(ctx, weights: Path, cases: list[str]) -> dict:
    """A fresh process per case (--smoke: all cases in this process, the high-water mark reset before each)."""
    if ctx.smoke:
        return {r["case"]: r for r in measure_cases(ctx.device, str(weights), cases)}
    script = Path(__file__).resolve()
    base = ["--device", ctx.device, "--threads", str(ctx.threads), "--weights", str(weights)]
    out = {}
    for c in cases:
        res = harness.run_worker(script, ["--worker", *base, "--cases", c], env_extra=MEM_ENV)
        out.update({r["case"]: r for r in res["results"]})
    return out


def network_pixels(h: int, w: int, tile: int, pad: int) -> tuple[int, int]:
    """Input pixels each side runs through the network for one image (x4: no pad to a multiple)."""
    harness.import_pack()
    from visionkit_pack.models.upscale import plan_axis

    def ours(n):
        p = plan_axis(n, tile, pad)
        return p.count * p.window

    def ref(n):  # RealESRGANer.tile_process: tiles on a fixed grid, the last one smaller, pads clipped
        return sum(min(o + tile + pad, n) - max(o - pad, 0) for o in range(0, n, tile))

    return ours(h) * ours(w), ref(h) * ref(w)


# ---------------------------------------------------------------- the benchmark
@register("upscale", "Real-ESRGAN x4plus: tiled engine vs RealESRGANer")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    dims = TINY if ctx.smoke else X4PLUS
    # 80×112 (12 windows of tile 32) and up: smaller images fill fewer windows than the engine batches at once,
    # so their memory is not yet at its plateau (measured: 64×96 → 128×192 grew 1.35×, 80×112 → 160×224 1.14×)
    h1, w1 = ctx.pick((80, 112), (80, 112), (32, 48))
    h4, w4 = 2 * h1, 2 * w1
    repeats = ctx.pick(2, 1, 1)
    root = ctx.tmp / "upscale-models"
    name = "RealESRGAN_x4plus_random.pth"
    weights = root / "upscale_models" / name
    tiny = ctx.tmp / "upscale-tiny" / "tiny_x4.pth"
    write_weights(weights, dims)
    write_weights(tiny, TINY, seed=1)
    arch = "tiny RRDBNet (2 blocks, 8 feat)" if ctx.smoke else "RRDBNet x4plus (23 blocks, 64 feat, 32 grow)"
    mb = weights.stat().st_size / 2**20
    rows = [harness.loader_row(ctx, root, "VisionKitUpscaleModelLoader", name, "Real-ESRGAN",
                               f"{arch}, {mb:.0f} MB, random weights")]

    with harness.env(VISIONKIT_MODELS_DIR=root), harness.fresh_cache():
        impls = {k: cls(str(weights), TILE, PAD, ctx.device) for k, cls in IMPLS.items()}
        img = make_image(32, 32)
        harness.interleaved({k: (lambda i=i: i.run(i.prepare(img))) for k, i in impls.items()}, 1, ctx.sync)
        image = make_image(h1, w1)
        prepared = {k: i.prepare(image) for k, i in impls.items()}
        ctx.log(f"upscale: timing {w1}×{h1}, {repeats} interleaved rounds")
        times, _ = harness.interleaved({k: (lambda i=i, x=prepared[k]: i.run(x)) for k, i in impls.items()}, repeats,
                                       ctx.sync)
        del impls, prepared
        gc.collect()

    ctx.log("upscale: peak memory in fresh processes")
    cases = [f"{k}:{h}:{w}" for (h, w) in ((h1, w1), (h4, w4)) for k in IMPLS]
    short, long = ctx.pick((1024, 8192), (512, 4096), (128, 1024))
    strip_cases = [f"{k}:64:{n}:64" for n in (short, long) for k in IMPLS]
    mem = measure_memory(ctx, weights, cases)
    strip = measure_memory(ctx, tiny, strip_cases)

    def m(k, h, w):
        return mem[f"{k}:{h}:{w}"]

    tp, tr = min(times["pack"]), min(times["ref"])
    t4 = m("pack", h4, w4)["seconds"] / m("ref", h4, w4)["seconds"]
    px1, rpx1 = network_pixels(h1, w1, TILE, PAD)
    rows.append(goal_row("Real-ESRGAN tiled vs RealESRGANer.enhance, time", tp / tr, "<=", 1.0, "×",
                         f"{w1}×{h1} input, tile {TILE} pad {PAD}, {arch}: VisionKit {tp:.2f} s, RealESRGANer "
                         f"{tr:.2f} s (min of {repeats} interleaved); network reads {px1} vs {rpx1} px; at 4× area, "
                         f"single runs in the memory processes: {t4:.2f}×"))
    # max(.., 1): a tiny (--smoke) image may not raise the peak at all; real sizes grow by megabytes
    g_pack = m("pack", h4, w4)["growth"] / max(m("pack", h1, w1)["growth"], 1)
    g_ref = m("ref", h4, w4)["growth"] / max(m("ref", h1, w1)["growth"], 1)
    beyond = ((m("pack", h4, w4)["growth"] - m("pack", h4, w4)["out_bytes"])
              / max(m("pack", h1, w1)["growth"] - m("pack", h1, w1)["out_bytes"], 1))
    rows.append(goal_row("Real-ESRGAN peak memory growth, 4× area vs 1×", g_pack, "<=", 1.3, "×",
                         f"{w4}×{h4} vs {w1}×{h1}: +{m('pack', h4, w4)['growth'] / 2**20:.1f} MB vs "
                         f"+{m('pack', h1, w1)['growth'] / 2**20:.1f} MB; beyond the output buffer {beyond:.2f}×; "
                         f"RealESRGANer {g_ref:.2f}×; {m('pack', h1, w1)['how']}, "
                         + ("one process (smoke)" if ctx.smoke else "fresh process each")))
    s1, s8 = strip[f"pack:64:{short}:64"], strip[f"pack:64:{long}:64"]
    ws1, ws8 = s1["growth"] - s1["out_bytes"], s8["growth"] - s8["out_bytes"]
    r1, r8 = strip[f"ref:64:{short}:64"]["growth"], strip[f"ref:64:{long}:64"]["growth"]
    rows.append(Row(f"Real-ESRGAN working memory beyond the output, {long}×64 vs {short}×64 strip", ws8 / max(ws1, 1),
                    "—", None, "×",
                    f"tiny weights, tile 64: {ws1 / 2**20:.1f} → {ws8 / 2**20:.1f} MB; RealESRGANer peak growth "
                    f"{r8 / max(r1, 1):.2f}×"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--weights")
    ap.add_argument("--cases", nargs="+")
    args, _rest = ap.parse_known_args()
    if args.worker:
        worker(args)
        return 0
    return harness.main_single("upscale")


if __name__ == "__main__":
    sys.exit(main())
