"""Upscale: VisionKit's loader and node side by side with ComfyUI core's (UpscaleModelLoader,
ImageUpscaleWithModel), in one real ComfyUI process, on the same weights and image.

    .venv/bin/python bench/upscale_bench.py [--quick|--smoke] [--device cuda]

Both sides load the real RealESRGAN_x4plus architecture (RRDBNet, 23 blocks, 64 features, Real-ESRGAN key
names) with random (seeded) weights from one .pth through their own loaders; --smoke uses a 2-block, 8-feature
RRDBNet (numbers mean nothing). ComfyUI (COMFYUI_DIR, else ../shared/comfyui) is imported in a worker process
(never in the bench process: the pack would then believe it runs inside ComfyUI for every later benchmark), its
core nodes are called as the executor calls them, and the pack runs as it does inside ComfyUI (its device, its
folders, its progress bar). Each node runs with its defaults: VisionKit tile 512 pad 16, core tile 512 overlap 32.

- node time: minimum of N interleaved runs per side (goal: VisionKit / core ≤ 1.0);
- model load: the loader node on a cold cache vs core's loader, minimum of N interleaved (goal ≤ 1.0);
- peak memory: the growth of the process's peak RSS during one node run (the kernel's high-water mark reset
  just before it; glibc's mmap threshold fixed so the RSS follows live memory), one process per side, at 1×
  and 4× area: VisionKit vs core at 4× (goal ≤ 1.0), and VisionKit's growth 4× / 1× (goal ≤ 1.3); on CUDA
  torch's peak allocated memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from pathlib import Path

import harness
import measure
from harness import Row, goal_row, register

X4PLUS = {"num_blocks": 23, "nf": 64}  # RealESRGAN_x4plus
TINY = {"num_blocks": 2, "nf": 8}
MEM_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
NAME = "RealESRGAN_x4plus_random.pth"
TILE, PAD = 32, 10  # the tiled memory case (the images are smaller than the nodes' default 512 tiles)


# ---------------------------------------------------------------- building blocks
def write_weights(path: Path, dims: dict, seed: int = 0) -> None:
    """A RealESRGAN_x4plus-layout file (params_ema, basicsr key names) built with spandrel's RRDBNet."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=dims["nf"], num_blocks=dims["num_blocks"], scale=4)
    with torch.no_grad():  # the default init leaves the body nearly idle; make every weight count
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    nb = dims["num_blocks"]
    fixed = {"model.0": "conv_first", f"model.1.sub.{nb}": "conv_body", "model.3": "conv_up1", "model.6": "conv_up2",
             "model.8": "conv_hr", "model.10": "conv_last"}
    sd = {}
    for k, v in net.state_dict().items():
        m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", k)
        prefix, kind = k.rsplit(".", 1)
        sd[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}" if m else f"{fixed[prefix]}.{kind}"] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": sd}, path)


def make_image(h: int, w: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    return (x.permute(0, 2, 3, 1) * 255).round().div(255).contiguous()


def find_comfyui() -> Path | None:
    env = os.environ.get("COMFYUI_DIR")
    for p in ([Path(env)] if env else []) + [harness.ROOT.parent / "shared" / "comfyui", harness.ROOT / ".comfyui"]:
        if (p / "comfy_extras" / "nodes_upscale_model.py").is_file():
            return p
    return None


# ---------------------------------------------------------------- the worker: one real ComfyUI, both sides
class Sides:
    """ComfyUI imported in this process (its CPU/CUDA device), core's upscale nodes and VisionKit's, both
    reading upscale_models from `folder`."""

    def __init__(self, comfy_dir: str, folder: str, device: str):
        sys.dont_write_bytecode = True  # never write into the ComfyUI snapshot
        sys.path.insert(0, comfy_dir)
        os.environ.pop("VISIONKIT_STANDALONE", None)
        import comfy.cli_args

        if device == "cpu":
            comfy.cli_args.args.cpu = True
        import comfy.model_management  # noqa: F401
        import folder_paths

        folder_paths.add_model_folder_path("upscale_models", folder, is_default=True)
        from comfy_extras import nodes_upscale_model as core

        self.core = core
        pack = harness.import_pack()
        self.vk_loader = pack.NODE_CLASS_MAPPINGS["VisionKitUpscaleModelLoader"]()
        self.vk_node = pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"]()

    def load_core(self):
        return self.core.UpscaleModelLoader.execute(NAME)[0]

    def load_pack(self):
        return self.vk_loader.load(NAME, "auto")[0]

    def forget_pack(self):
        """Empty the pack's cache (untimed), so that the next load is cold."""
        from visionkit_pack.models.core.cache import get_cache

        get_cache().purge()

    def run_core(self, model, image):
        return self.core.ImageUpscaleWithModel.execute(model, image)[0]

    def run_pack(self, spec, image):
        return self.vk_node.upscale(spec, image)[0]  # the node's defaults

    def run_pack_tiled(self, spec, image):
        """Small tiles, so that a 4x larger image means more tiles, not larger windows: what tiling costs."""
        return self.vk_node.upscale(spec, image, tile_size=TILE, tile_pad=PAD)[0]


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sides = Sides(args.comfy, args.folder, args.device)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    h1, w1 = args.size
    out: dict = {}
    if args.task == "time":
        core_model, spec = sides.load_core(), sides.load_pack()
        small = make_image(32, 32)
        sides.run_core(core_model, small), sides.run_pack(spec, small)  # warm-up
        img = make_image(h1, w1)
        times, results = measure.interleaved({"pack": lambda: sides.run_pack(spec, img),
                                              "core": lambda: sides.run_core(core_model, img)}, args.rounds, sync)
        out["times"] = times
        out["max_diff_levels"] = float((results["pack"] - results["core"]).abs().max() * 255)
        loads: dict = {"pack": [], "core": []}
        del core_model, spec
        for _ in range(args.rounds):
            sides.forget_pack()
            loads["pack"].append(measure.timed(sides.load_pack, sync)[0])
            loads["core"].append(measure.timed(sides.load_core, sync)[0])
        out["loads"] = loads
    else:  # "mem:pack|pack_tiled|core": 1x then 4x area in this process, the high-water mark reset before each
        side = args.task.split(":")[1]
        model = sides.load_core() if side == "core" else sides.load_pack()
        run = {"pack": sides.run_pack, "pack_tiled": sides.run_pack_tiled, "core": sides.run_core}[side]
        run(model, make_image(32, 32))
        for h, w in ((h1, w1), (2 * h1, 2 * w1)):
            x = make_image(h, w)
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                reset = measure.reset_peak_rss()
                base = (measure.status_kb("VmRSS") or 0) * 1024
            t0 = time.perf_counter()
            y = run(model, x)
            if cuda:
                torch.cuda.synchronize()
                peak, how = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
            else:
                peak = measure.peak_rss_bytes()
                how = "VmHWM after reset" if reset else "ru_maxrss (no reset: includes set-up)"
            out[f"{h}x{w}"] = {"growth": peak - base, "out_bytes": int(y.numel() * y.element_size()),
                               "seconds": time.perf_counter() - t0, "how": how}
            del x, y
            gc.collect()
    print(json.dumps(out))


# ---------------------------------------------------------------- install size
def install_footprint(comfy: Path) -> dict:
    """What requirements.txt adds to a ComfyUI environment, now and with realesrgan + basicsr as it had: the
    distributions its requirements pull (this venv's installed metadata, markers evaluated here) that
    ComfyUI's own requirements and the torch trio do not, and their installed size on disk (RECORD files).
    Not a download: the figure of a plain install (wheels unpacked), without basicsr's isolated build, whose
    second torch (~5.5 GB on a fresh machine) came on top."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    def norm(n: str) -> str:
        return re.sub(r"[-_.]+", "-", n).lower()

    dists = {norm(d.metadata["Name"]): d for d in md.distributions()}

    def closure(roots) -> set:
        seen, stack = set(), [norm(r) for r in roots]
        while stack:
            n = stack.pop()
            if n in seen or n not in dists:
                continue
            seen.add(n)
            for r in dists[n].requires or []:
                req = Requirement(r)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    stack.append(norm(req.name))
        return seen

    def names(path: Path) -> list[str]:
        out = []
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    out.append(req.name)
        return out

    def size(n: str) -> int:
        total = 0
        for f in dists[n].files or []:
            try:
                total += os.path.getsize(dists[n].locate_file(f))
            except OSError:
                pass
        return total

    base = closure(names(comfy / "requirements.txt") + ["torch", "torchvision", "torchaudio"])
    now = closure(names(harness.ROOT / "requirements.txt")) - base
    before = (closure(names(harness.ROOT / "requirements.txt") + ["realesrgan", "basicsr"])) - base
    gone = sorted(before - now)
    return {"now_n": len(now), "now_mb": sum(map(size, now)) / 2**20, "before_n": len(before),
            "before_mb": sum(map(size, before)) / 2**20, "gone": gone, "gone_mb": sum(map(size, gone)) / 2**20,
            "measured": all(n in dists for n in ("realesrgan", "basicsr"))}


# ---------------------------------------------------------------- the benchmark
@register("upscale", "Upscale (RealESRGAN_x4plus architecture): VisionKit vs ComfyUI core, one ComfyUI process")
def bench(ctx) -> list[Row]:
    comfy = find_comfyui()
    if comfy is None:
        return [Row("Upscale node vs ComfyUI core ImageUpscaleWithModel, time", None,
                    notes="no ComfyUI found (set COMFYUI_DIR): nothing to compare with")]
    dims = TINY if ctx.smoke else X4PLUS
    # 80×112 and up: on smaller images the tiled case fills fewer windows than it batches, so its memory is not yet
    # at its plateau (measured: 64×96 → 128×192 grew 1.35×, 80×112 → 160×224 1.14×)
    h1, w1 = ctx.pick((80, 112), (48, 64), (24, 32))
    rounds = ctx.pick(3, 2, 1)
    root = ctx.tmp / "upscale-models"
    folder = root / "upscale_models"
    weights = folder / NAME
    write_weights(weights, dims)
    arch = "tiny RRDBNet (2 blocks, 8 feat)" if ctx.smoke else "RRDBNet x4plus (23 blocks, 64 feat)"
    mb = weights.stat().st_size / 2**20
    script = Path(__file__).resolve()
    base = ["--worker", "--device", ctx.device, "--threads", str(ctx.threads), "--comfy", str(comfy),
            "--folder", str(folder), "--size", str(h1), str(w1), "--rounds", str(rounds)]
    ctx.log(f"upscale: node and loader times in one ComfyUI process ({comfy.name}), {w1}×{h1}, {rounds} rounds")
    t = harness.run_worker(script, [*base, "--task", "time"], timeout=1800)
    ctx.log("upscale: peak memory, one ComfyUI process per side")
    mem = {s: harness.run_worker(script, [*base, "--task", f"mem:{s}"], env_extra=MEM_ENV, timeout=1800)
           for s in ("pack", "core", "pack_tiled")}

    tp, tc = min(t["times"]["pack"]), min(t["times"]["core"])
    lp, lc = min(t["loads"]["pack"]), min(t["loads"]["core"])
    k1, k4 = f"{h1}x{w1}", f"{2 * h1}x{2 * w1}"
    gp1, gp4 = mem["pack"][k1]["growth"], mem["pack"][k4]["growth"]
    gc1, gc4 = mem["core"][k1]["growth"], mem["core"][k4]["growth"]
    how = mem["pack"][k1]["how"]
    gt1, gt4 = mem["pack_tiled"][k1]["growth"], mem["pack_tiled"][k4]["growth"]
    rows = [
        harness.loader_row(ctx, root, "VisionKitUpscaleModelLoader", NAME, "Upscale", f"{arch}, {mb:.0f} MB"),
        goal_row("Upscale node vs ComfyUI core ImageUpscaleWithModel, time", tp / tc, "<=", 1.0, "×",
                 f"{w1}×{h1} input, {arch}, each node's defaults: VisionKit {tp:.2f} s, core {tc:.2f} s (min of "
                 f"{rounds} interleaved); outputs differ by at most {t['max_diff_levels']:.2f} levels"),
        goal_row("Upscale model load vs ComfyUI core UpscaleModelLoader", lp / lc, "<=", 1.0, "×",
                 f"{arch}, {mb:.0f} MB .pth: VisionKit cold load {lp:.3f} s (cache emptied before each, untimed), core "
                 f"{lc:.3f} s (min of {rounds} interleaved)"),
        goal_row("Upscale peak memory vs ComfyUI core, 4× area", gp4 / max(gc4, 1), "<=", 1.0, "×",
                 f"{2 * w1}×{2 * h1}: VisionKit +{gp4 / 2**20:.1f} MB, core +{gc4 / 2**20:.1f} MB; at 1× "
                 f"{gp1 / 2**20:.1f} vs {gc1 / 2**20:.1f} MB; {how}, one process per side"),
        # max(.., 1): a tiny (--smoke) image may not raise the peak at all; real sizes grow by megabytes
        goal_row("Upscale peak memory growth, 4× area vs 1×", gt4 / max(gt1, 1), "<=", 1.3, "×",
                 f"VisionKit node, tile {TILE} pad {PAD}: +{gt1 / 2**20:.1f} → +{gt4 / 2**20:.1f} MB (the output "
                 f"buffer alone {mem['pack'][k1]['out_bytes'] / 2**20:.1f} → {mem['pack'][k4]['out_bytes'] / 2**20:.1f}"
                 f" MB); at the defaults both images fit one 512 tile, so both sides grow with the area: VisionKit "
                 f"{gp4 / max(gp1, 1):.2f}×, core {gc4 / max(gc1, 1):.2f}×"),
    ]
    inst = install_footprint(comfy)
    rows.append(Row("Pack requirements beyond ComfyUI's, installed size", inst["now_mb"], "—", None, "MB",
                    f"{inst['now_n']} distributions; with realesrgan + basicsr (before) {inst['before_n']}, "
                    f"{inst['before_mb']:.0f} MB; no longer installed: {len(inst['gone'])} ({inst['gone_mb']:.0f} MB: "
                    f"{', '.join(inst['gone'])}), nor basicsr's isolated build with its own torch; sizes of the "
                    "installed files in this venv" + ("" if inst["measured"] else " (realesrgan/basicsr missing here: "
                                                      "'before' undercounts)")))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--comfy")
    ap.add_argument("--folder")
    ap.add_argument("--size", type=int, nargs=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--task")
    args, _rest = ap.parse_known_args()
    if args.worker:
        worker(args)
        return 0
    return harness.main_single("upscale")


if __name__ == "__main__":
    sys.exit(main())
