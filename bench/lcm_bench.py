"""LCM Sampler benchmark: 4 LCM steps vs 25 steps of the pipeline's default scheduler, and the node's overhead
over the bare diffusers pipeline call.

    .venv/bin/python bench/lcm_bench.py            # reduced SD1.5-shaped UNet/VAE, 256x256, a few minutes on 2 cores
    .venv/bin/python bench/lcm_bench.py --full     # the real SD1.5 UNet/VAE configs (860M / 84M parameters)
    .venv/bin/python bench/lcm_bench.py --quick    # 128x128, 1 repeat: a smoke run

The pipeline is SD1.5-shaped with random (seeded) weights: the shipped SD1.5 UNet and VAE configs
(models/sd_configs/sd15), by default with every channel count halved (about 1/4 of the FLOPs, same depth, same
attention layout) so that 25 CFG steps fit the time of a shared 2-core CPU; --full uses them as they are. No text
encoder runs: the conditioning is a random (1, 77, 768) prompt / negative pair, as Prompt Encode would give. The
components are served through the pack's cache like a loaded checkpoint, so the node pays what it pays in a
workflow (cache lookup, pinning, scheduler construction, per-run patch block).

Printed (times: best of N runs, one for the long default-scheduler run; the machine may be shared):
- LCM 4 steps at guidance 1 (one UNet pass per step, the LCM-LoRA setting) and at guidance 1.5 (with CFG), vs the
  pipeline default (PNDM) at 25 steps, guidance 7.5 (CFG: two passes per step). Goal: LCM / default <= 0.2.
- The node (VisionKitLCMSampler.sample) vs diffusers' StableDiffusionPipeline called with the same components,
  prompt embeddings, LCMScheduler, seed and size (both decode with the VAE). Goal: node / diffusers <= 1.05. The
  two outputs are compared too (they are equal: same seed, same draws).

GPU numbers only from a machine that has one (--device cuda).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "visionkit_pack"


def import_pack():
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod


def _config(part: str, full: bool) -> dict:
    cfg = json.loads((ROOT / "models" / "sd_configs" / "sd15" / part / "config.json").read_text())
    if not full:
        cfg["block_out_channels"] = [c // 2 for c in cfg["block_out_channels"]]
    return cfg


def _build(spec, device):
    """Cache builder: SD1.5-shaped Components with seeded random weights (the marker file says which size)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from visionkit_pack.models.cache import Loaded
    from visionkit_pack.models.sd_types import Components

    full = json.loads(Path(spec.path).read_text())["full"]
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(_config("unet", full)).eval().requires_grad_(False).to(device)
    vae = AutoencoderKL.from_config(_config("vae", full)).eval().requires_grad_(False).to(device)
    sched = json.loads((ROOT / "models" / "sd_configs" / "sd15" / "scheduler" / "scheduler_config.json").read_text())
    comps = Components(arch="sd15", unet=unet, vae=vae, text_encoder=None, tokenizer=None, scheduler_config=sched)
    return Loaded(comps, meta={"arch": "sd15"})


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the real SD1.5 UNet/VAE configs (slow on a CPU)")
    ap.add_argument("--quick", action="store_true", help="128x128, one repeat")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--default-steps", type=int, default=25)
    ap.add_argument("--lcm-steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default). 1 by default: on a shared 2-core machine two OpenMP "
                         "threads made a UNet pass 18x slower (0.33 s vs 6 s) while another process ran")
    args = ap.parse_args()
    if args.quick:
        args.size, args.repeats = 128, 1
    os.environ["VISIONKIT_STANDALONE"] = "1"
    os.environ["VISIONKIT_DEVICE"] = args.device
    os.environ.setdefault("VISIONKIT_CACHE_GB", "16")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pack = import_pack()
    from diffusers import LCMScheduler, StableDiffusionPipeline
    from visionkit_pack.models.cache import ModelSpec, get_cache
    from visionkit_pack.models.sd_types import Conditioning, PipelineHandle

    tmp = Path(tempfile.mkdtemp(prefix="vk-lcm-bench-"))
    marker = tmp / ("sd15-full.json" if args.full else "sd15-reduced.json")
    marker.write_text(json.dumps({"full": args.full}))
    handle = PipelineHandle(spec=ModelSpec(kind="bench_sd15", path=str(marker), build=_build, dtype="fp32"),
                            arch="sd15", name=marker.stem)
    t = time.perf_counter()
    comps = get_cache().load(handle.spec).value
    build_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(1)
    cond = Conditioning(arch="sd15", prompt_embeds=torch.randn(1, 77, 768, generator=g),
                        negative_prompt_embeds=torch.randn(1, 77, 768, generator=g))

    def count(m):
        return sum(p.numel() for p in m.parameters()) / 1e6

    print(f"pipeline: SD1.5-shaped, {'real' if args.full else 'halved-channel'} configs, random weights "
          f"(UNet {count(comps.unet):.0f}M params, channels {list(comps.unet.config.block_out_channels)}; VAE "
          f"{count(comps.vae):.1f}M), fp32, {args.size}x{args.size}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}, built in {build_s:.1f} s; best of {args.repeats}")

    node = pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"]()
    common = {"seed": 7, "width": args.size, "height": args.size, "batch_size": 1, "denoise": 1.0}

    def run_node(scheduler, steps, guidance):
        return node.sample(handle, cond, steps=steps, guidance=guidance, scheduler=scheduler, **common)[0]

    run_node("lcm", 1, 1.0)  # warm-up (first-call allocations, kernel selection)
    lcm1, _ = best(lambda: run_node("lcm", args.lcm_steps, 1.0), args.repeats)
    lcm_cfg, _ = best(lambda: run_node("lcm", args.lcm_steps, 1.5), args.repeats)
    default, _ = best(lambda: run_node("pipeline default", args.default_steps, 7.5), 1)  # long: one run
    print(f"\nLCM {args.lcm_steps} steps, guidance 1.0 (no CFG): {lcm1:7.2f} s")
    print(f"LCM {args.lcm_steps} steps, guidance 1.5 (CFG):    {lcm_cfg:7.2f} s")
    print(f"pipeline default ({type(_default_scheduler(comps)).__name__}) {args.default_steps} steps, guidance 7.5: "
          f"{default:7.2f} s")
    print(f"ratio LCM/default: {lcm1 / default:.3f} (guidance 1.0), {lcm_cfg / default:.3f} (guidance 1.5)"
          "   goal <= 0.2")

    pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=None, tokenizer=None, unet=comps.unet,
                                   scheduler=LCMScheduler.from_config(comps.scheduler_config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def run_diffusers(guidance):
        return pipe(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
                    num_inference_steps=args.lcm_steps, guidance_scale=guidance, height=args.size, width=args.size,
                    generator=torch.Generator().manual_seed(common["seed"]), output_type="pt").images

    print()
    for guidance in (1.0, 1.5):
        run_diffusers(guidance)
        times_node, times_ref = [], []
        for _ in range(args.repeats):  # interleaved, so both sides see the same machine load
            tn, out_node = best(lambda g=guidance: run_node("lcm", args.lcm_steps, g), 1)
            tr, out_ref = best(lambda g=guidance: run_diffusers(g), 1)
            times_node.append(tn)
            times_ref.append(tr)
        diff = (out_node - out_ref.permute(0, 2, 3, 1)).abs().max().item()
        print(f"node vs diffusers, LCM {args.lcm_steps} steps, guidance {guidance}: node {min(times_node):.2f} s, "
              f"diffusers {min(times_ref):.2f} s, ratio {min(times_node) / min(times_ref):.3f}   goal <= 1.05 "
              f"(max |difference| {diff:.1e})")


def _default_scheduler(comps):
    from visionkit_pack.models.sd_schedulers import make_scheduler

    return make_scheduler("pipeline default", comps.scheduler_config)


if __name__ == "__main__":
    main()
