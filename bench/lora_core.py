"""LoRA: the pack's LCM Sampler node and ComfyUI core side by side, with and without the same LoRA (see lora_bench.py).

ComfyUI core side by side (full mode: core's model detection knows SD1.5 only by its real layout, so --quick's
half-width and --smoke's tiny UNets cannot be loaded there): ComfyUI (COMFYUI_DIR, else ../shared/comfyui) is
imported in a worker process with --cpu on a CPU, the pack runs in it as it does inside ComfyUI, and both sides
run under torch.inference_mode as ComfyUI's executor runs a prompt. Core's graph is the usual LCM-LoRA one:
UNETLoader (the pack's seeded random UNet saved as a diffusers-format safetensors, which core converts) →
LoraLoaderModelOnly (the same kohya file, strength 1) → ModelSamplingDiscrete sampling=lcm → KSampler lcm,
scheduler sgm_uniform, cfg 1, 4 steps, on EmptyLatentImage → VAEDecode (VAELoader, the same VAE weights);
positive / negative are [[tensor (1, 77, 768), {}]] from the same conditioning tensors the node gets. One
process per stack (with the LoRA, without): after one untimed first run per side (patching, core's model
load), the two sides alternate for `rounds` rounds; wall and process CPU time of each run. Rows: node / core
time with and without the LoRA (goal ≤ 1.0); and core's peak RSS in processes of its own (VmHWM reset after
its loaders, then a first and a repeated run) beside the node's peak processes above (no goal).
The load average at the start and end of each worker is in the notes.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import harness
import measure
from harness import Row, goal_row

LORA_BENCH = Path(__file__).resolve().with_name("lora_bench.py")  # its main() runs the workers (--worker --core)

# ---------------------------------------------------------------- ComfyUI core side by side (one worker per stack)
CORE_UNET, CORE_VAE = "vk-bench-sd15-random-unet.safetensors", "vk-bench-sd15-random-vae.safetensors"
CORE_LORA = "lcm-shaped-lora-sd15.safetensors"


def _save_once(module, path: Path) -> None:
    """The module's state dict as a safetensors file (written once per bench run; renamed into place)."""
    from safetensors.torch import save_file

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(part))
    part.rename(path)


def core_worker(args) -> None:
    """The pack's LCM Sampler node and ComfyUI core (UNETLoader → LoraLoaderModelOnly → ModelSamplingDiscrete lcm →
    KSampler lcm → VAEDecode) in one real ComfyUI process, on the same weights, LoRA file and conditioning.

    task "time": both sides, interleaved (wall and process CPU time of every run); task "mem": core alone, its
    peak RSS from after loading, like the pack's own peak process (`worker`)."""
    harness.setup_env(args.device)
    import gc

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.dont_write_bytecode = True  # never write into the ComfyUI snapshot
    sys.path.insert(0, args.comfy)
    os.environ.pop("VISIONKIT_STANDALONE", None)  # the pack as it runs inside ComfyUI
    import comfy.cli_args

    if args.device == "cpu":
        comfy.cli_args.args.cpu = True
    import comfy.model_management
    import folder_paths

    folder = Path(args.folder)
    for kind in ("diffusion_models", "vae", "loras"):
        folder_paths.add_model_folder_path(kind, str(folder / kind), is_default=True)
    from comfy_extras import nodes_model_advanced

    import nodes

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    pack = harness.import_pack()
    # ComfyUI runs a whole prompt, loaders included, under torch.inference_mode (execution.py): so do both sides
    load0 = os.getloadavg()[0]
    with torch.inference_mode():
        out = _core_run(args, torch, gc, nodes, nodes_model_advanced, pack)
    out["load"] = [load0, os.getloadavg()[0]]
    print(json.dumps(out))


def _core_run(args, torch, gc, nodes, nodes_model_advanced, pack) -> dict:
    import lcm_bench
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.sd import lora as sd_lora
    from visionkit_pack.models.sd.types import LoraRef

    folder = Path(args.folder)
    lora_file = folder / "loras" / CORE_LORA
    ctx = SimpleNamespace(tmp=Path(args.tmp))
    handle = lcm_bench.make_handle(ctx, args.variant, args.dtype)
    cond = lcm_bench.make_conditioning(handle.arch, args.size)
    out: dict = {}
    with_pack = args.task == "time"
    if with_pack:  # the pack's pipeline (seeded random weights); core reads the same weights from files
        comps = get_cache().load(handle.spec).value
        _save_once(comps.unet, folder / "diffusion_models" / CORE_UNET)
        _save_once(comps.vae, folder / "vae" / CORE_VAE)
        if args.lora:
            spec, _lf = sd_lora.load_lora(str(lora_file))
            handle = handle.with_lora(LoraRef(spec, handle.arch, 1.0, 1.0, CORE_LORA))
        node = pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"]()

    model = nodes.UNETLoader().load_unet(CORE_UNET, "default")[0]
    if args.lora:
        model = nodes.LoraLoaderModelOnly().load_lora_model_only(model, CORE_LORA, 1.0)[0]
        out["core_patched"] = len(model.patches)
    model = nodes_model_advanced.ModelSamplingDiscrete().patch(model, "lcm", False)[0]
    vae = nodes.VAELoader().load_vae(CORE_VAE)[0]
    positive = [[cond.prompt_embeds, {}]]  # core's CONDITIONING: [[tensor (1, 77, 768), {}]]
    negative = [[cond.negative_prompt_embeds, {}]]
    latent = nodes.EmptyLatentImage().generate(args.size, args.size, 1)[0]
    if with_pack:  # the same weights on both sides (a spot check of the first and last convolution)
        dm = model.model.diffusion_model
        out["same_weights"] = bool(torch.equal(dm.input_blocks[0][0].weight, comps.unet.conv_in.weight)
                                   and torch.equal(dm.out[2].weight, comps.unet.conv_out.weight))
        del comps, dm

    def run_core():
        lat = nodes.KSampler().sample(model, 7, 4, 1.0, "lcm", "sgm_uniform", positive, negative, latent, 1.0)[0]
        return nodes.VAEDecode().decode(vae, lat)[0]

    def run_pack():
        return node.sample(handle, cond, seed=7, steps=4, guidance=1.0, scheduler="lcm", width=args.size,
                           height=args.size, batch_size=1, denoise=1.0)[0]

    def timed(fn):
        t, c = time.perf_counter(), time.process_time()
        img = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c, img

    if args.task == "mem":
        gc.collect()
        reset = measure.reset_peak_rss()
        out["base"] = measure.status_kb("VmRSS") * 1024
        out["first"] = timed(run_core)[0]
        out["times"] = [timed(run_core)[0] for _ in range(args.rounds)]
        out["peak"], out["reset"] = measure.peak_rss_bytes(), reset
        return out
    sides = {"pack": run_pack, "core": run_core}
    first = {k: timed(fn)[0] for k, fn in sides.items()}  # first runs: patches (both sides), loads (core)
    wall: dict = {k: [] for k in sides}
    cpu: dict = {k: [] for k in sides}
    imgs: dict = {}
    for r in range(args.rounds):
        for k in (("pack", "core") if r % 2 == 0 else ("core", "pack")):
            w, c, imgs[k] = timed(sides[k])
            wall[k].append(w)
            cpu[k].append(c)
    from comfy.ldm.modules import attention as core_attention

    stats = get_cache().stats()["totals"]
    out.update(first=first, wall=wall, cpu=cpu, core_attention=core_attention.optimized_attention.__name__,
               shapes={k: list(v.shape) for k, v in imgs.items()}, cache_misses=stats["misses"],
               image_diff=float((imgs["pack"].float() - imgs["core"].float()).abs().mean()))
    return out


CORE_NAME = "LoRA: LCM Sampler node vs ComfyUI core (LoraLoaderModelOnly + KSampler lcm)"


def core_rows(ctx, variant, dtype, size, lora: Path, desc, plain, withl) -> list[Row]:
    """The same generation through ComfyUI core, with and without the LoRA: time (both sides interleaved in one
    ComfyUI process per stack) and, in full mode, core's peak RSS in processes of its own."""
    import shutil

    import upscale_bench

    comfy = upscale_bench.find_comfyui()
    if comfy is None or variant != "sd15":
        why = ("no ComfyUI found (set COMFYUI_DIR)" if comfy is None else
               f"not run on the {variant} UNet: core's model detection knows SD1.5 only by its real layout "
               "(320 channels), so it runs with the real SD1.5 UNet (full mode, ≥ 8 GB free) only")
        return [Row(f"{CORE_NAME}, with the LoRA, time", None, notes=why)]
    folder = ctx.tmp / "lora-core-models"
    (folder / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lora, folder / "loras" / CORE_LORA)
    rounds = ctx.pick(3, 2, 1)
    base = ["--worker", "--core", "--tmp", str(ctx.tmp), "--variant", variant, "--dtype", dtype, "--size",
            str(size), "--rounds", str(rounds), "--device", ctx.device, "--threads", str(ctx.threads or 0),
            "--comfy", str(comfy), "--folder", str(folder)]
    script = LORA_BENCH
    res, mem = {}, {}
    try:
        for name, extra in (("with", ["--lora", "1"]), ("without", [])):
            ctx.log(f"lora: node vs ComfyUI core {name} the LoRA ({comfy.name}), {rounds} interleaved rounds")
            res[name] = harness.run_worker(script, [*base, "--task", "time", *extra], timeout=3600)
            ctx.log(f"lora: core {name}: {res[name]['wall']}, cpu {res[name]['cpu']}")
        if not (ctx.smoke or ctx.quick):
            for name, extra in (("with", ["--lora", "1"]), ("without", [])):
                ctx.log(f"lora: ComfyUI core's peak RSS {name} the LoRA, a process of its own")
                mem[name] = harness.run_worker(script, [*base, "--task", "mem", "--rounds", "1", *extra],
                                               timeout=3600)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the 3.7 GB of exported UNet / VAE files
    rows = []
    for name in ("with", "without"):
        r = res[name]
        wp, wc = min(r["wall"]["pack"]), min(r["wall"]["core"])
        cp, cc = min(r["cpu"]["pack"]), min(r["cpu"]["core"])
        extra = (f"; core patched {r['core_patched']} weights" if "core_patched" in r else "")
        rows.append(goal_row(
            f"{CORE_NAME}, {name} the LoRA, time", wp / wc, "<=", 1.0, "×",
            f"wall {wp:.2f} s vs {wc:.2f} s; process CPU time {cp:.2f} s vs {cc:.2f} s = {cp / cc:.2f}× (min of "
            f"{rounds}, interleaved in one ComfyUI {comfy.name} process, after one untimed first run each: "
            f"{r['first']['pack']:.1f} s vs {r['first']['core']:.1f} s, patches and loads included); core: UNETLoader "
            f"(the same seeded weights saved as a diffusers-format safetensors; same weights checked: "
            f"{'yes' if r['same_weights'] else 'NO'}), ModelSamplingDiscrete lcm, KSampler lcm / sgm_uniform, cfg 1, "
            f"4 steps, VAEDecode, its CPU attention {r['core_attention']}{extra}; the node: 4 LCM steps, guidance 1, "
            f"VAE decode included; the same conditioning tensor; mean |image difference| {r['image_diff']:.3f} "
            f"(different noise and timesteps); load average {r['load'][0]:.2f} → {r['load'][1]:.2f}; {desc}"))
    if mem:
        gb = 1 << 30
        rows.append(Row(f"{CORE_NAME}, peak RSS with the LoRA", withl["peak"] / mem["with"]["peak"], "—", None, "×",
                        f"node {withl['peak'] / gb:.2f} GB vs core {mem['with']['peak'] / gb:.2f} GB; without the "
                        f"LoRA {plain['peak'] / gb:.2f} vs {mem['without']['peak'] / gb:.2f} GB "
                        f"({plain['peak'] / mem['without']['peak']:.2f}×); core with / without "
                        f"{mem['with']['peak'] / mem['without']['peak']:.2f}×. VmHWM of one process per side, reset "
                        f"after loading (RSS then: node {withl['base'] / gb:.2f} / {plain['base'] / gb:.2f} GB, core "
                        f"{mem['with']['base'] / gb:.2f} / {mem['without']['base'] / gb:.2f} GB), then a first and "
                        f"a repeated run; the node's processes run the pack standalone, core's run ComfyUI's own "
                        f"nodes"))
    return rows
