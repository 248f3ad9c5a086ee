"""LCM Sampler: 4 LCM steps vs 25 steps of the pipeline's default scheduler, and the node's overhead over the
bare diffusers pipeline call.

    .venv/bin/python bench/lcm_bench.py [--quick|--smoke] [--device cuda]

The pipeline has random (seeded) weights built from the shipped configs (models/sd/configs): the real SD1.5
UNet (860M parameters) and VAE when the device has the memory for them (≥ 8 GB free), else a small
SDXL-shaped UNet/VAE (half the channels, fewer transformer layers); --quick halves the SD1.5 channels
(same depth and attention layout), --smoke is tiny. Sizes: 256×256 on a CPU (25 CFG steps of the real UNet
at 512×512 would take many minutes), 512×512 on CUDA (fp16 there, the pack's dtype "auto"). No text encoder
runs: the conditioning is a random prompt / negative pair of the right shapes, as Prompt Encode gives. The
components are served through the pack's cache like a loaded checkpoint, so the node pays what it pays in a
workflow (cache lookup, pinning, scheduler construction, the per-run patch block).

Rows: LCM 4 steps at guidance 1 (one UNet pass per step, the LCM-LoRA setting; guidance 1.5 with CFG in the
notes) vs the default scheduler (PNDM for SD1.5, Euler discrete for SDXL) at 25 steps, guidance 7.5 (two
passes per step); goal ≤ 0.2. The node (VisionKitLCMSampler) vs diffusers' StableDiffusion(XL)Pipeline with
the same components, embeddings, LCMScheduler, seed and size, interleaved; goal ≤ 1.05 (the outputs are
compared too). On CUDA: fp16 vs fp32, SDPA vs diffusers' classic attention, channels-last.
VISIONKIT_BENCH_LCM_VARIANT=sd15|sd15-half|sd15-tiny|sdxl-small forces the model.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import harness
import measure
from harness import Row, goal_row, register

CONFIGS = harness.ROOT / "models" / "sd" / "configs"
FULL_SD15_BYTES = 8 << 30  # free memory wanted for the real SD1.5 UNet + VAE in fp32 and their activations


def unet_vae_configs(variant: str) -> tuple[str, dict, dict]:
    """(arch, unet config, vae config) for 'sd15', 'sd15-half', 'sd15-tiny', 'sdxl-small'."""
    arch = "sdxl" if variant.startswith("sdxl") else "sd15"
    unet = json.loads((CONFIGS / arch / "unet" / "config.json").read_text())
    vae = json.loads((CONFIGS / arch / "vae" / "config.json").read_text())
    if variant == "sd15-half":
        unet["block_out_channels"] = [c // 2 for c in unet["block_out_channels"]]
    elif variant == "sd15-tiny":
        unet.update(block_out_channels=[32, 64, 64, 64], layers_per_block=1)
        vae.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    elif variant == "sdxl-small":
        unet.update(block_out_channels=[c // 2 for c in unet["block_out_channels"]],
                    transformer_layers_per_block=[1, 1, 2])
        vae.update(block_out_channels=[c // 2 for c in vae["block_out_channels"]])
    elif variant != "sd15":
        raise ValueError(variant)
    return arch, unet, vae


def _build(spec, device):
    """Cache builder: Components with seeded random weights (the marker file names the variant)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from visionkit_pack.models.core.cache import Loaded
    from visionkit_pack.models.sd.types import Components

    variant = json.loads(Path(spec.path).read_text())["variant"]
    arch, ucfg, vcfg = unet_vae_configs(variant)
    dtype = torch.float16 if spec.dtype == "fp16" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(ucfg).eval().requires_grad_(False).to(device, dtype)
    vae = AutoencoderKL.from_config(vcfg).eval().requires_grad_(False).to(device, dtype)
    sched = json.loads((CONFIGS / arch / "scheduler" / "scheduler_config.json").read_text())
    return Loaded(Components(arch=arch, unet=unet, vae=vae, text_encoder=None, tokenizer=None,
                             scheduler_config=sched), meta={"arch": arch})


def make_handle(ctx, variant: str, dtype: str):
    from visionkit_pack.models.core.cache import ModelSpec
    from visionkit_pack.models.sd.types import PipelineHandle

    marker = ctx.tmp / f"lcm-{variant}-{dtype}.json"
    if not marker.exists():  # written once: its mtime is part of the cache key
        marker.write_text(json.dumps({"variant": variant}))
    arch = "sdxl" if variant.startswith("sdxl") else "sd15"
    return PipelineHandle(spec=ModelSpec(kind="bench_pipeline", path=str(marker), build=_build, dtype=dtype),
                          arch=arch, name=marker.stem)


def make_conditioning(arch: str, size: int):
    import torch
    from visionkit_pack.models.sd.types import Conditioning

    g = torch.Generator().manual_seed(1)
    if arch == "sd15":
        return Conditioning(arch="sd15", prompt_embeds=torch.randn(1, 77, 768, generator=g),
                            negative_prompt_embeds=torch.randn(1, 77, 768, generator=g))
    ids = (size, size, 0, 0, size, size)
    return Conditioning(arch="sdxl", prompt_embeds=torch.randn(1, 77, 2048, generator=g),
                        negative_prompt_embeds=torch.randn(1, 77, 2048, generator=g),
                        pooled=torch.randn(1, 1280, generator=g), negative_pooled=torch.randn(1, 1280, generator=g),
                        add_time_ids=ids, negative_add_time_ids=ids)


def diffusers_pipeline(comps):
    from diffusers import (
        LCMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    sched = LCMScheduler.from_config(comps.scheduler_config)
    if comps.arch == "sd15":
        pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=None, tokenizer=None, unet=comps.unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(vae=comps.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=comps.unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pick_variant(ctx) -> str:
    forced = os.environ.get("VISIONKIT_BENCH_LCM_VARIANT")  # sd15 | sd15-half | sd15-tiny | sdxl-small
    if forced:
        unet_vae_configs(forced)  # a clear error for an unknown name
        return forced
    if ctx.smoke:
        return "sd15-tiny"
    if ctx.quick:
        return "sd15-half"
    free = harness.available_memory_bytes(ctx.device)
    return "sd15" if free >= FULL_SD15_BYTES else "sdxl-small"


@register("lcm", "LCM Sampler: 4 LCM steps vs 25 default steps, node vs diffusers")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    pack = harness.import_pack()
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.sd.schedulers import make_scheduler

    variant = pick_variant(ctx)
    size = ctx.pick(512 if ctx.cuda else 256, 128, 64)
    rounds = ctx.pick(2, 1, 1)
    default_steps, lcm_steps = 25, 4
    dtype = "fp16" if ctx.cuda else "fp32"
    rows: list[Row] = []
    with harness.fresh_cache():
        handle = make_handle(ctx, variant, dtype)
        build_s, entry = measure.timed(lambda: get_cache().load(handle.spec))
        comps = entry.value
        cond = make_conditioning(comps.arch, size)
        params = sum(p.numel() for p in comps.unet.parameters()) / 1e6
        vae_params = sum(p.numel() for p in comps.vae.parameters()) / 1e6
        desc = (f"{variant} UNet {params:.0f}M params (channels {list(comps.unet.config.block_out_channels)}), VAE "
                f"{vae_params:.0f}M, random weights, {dtype}, {size}×{size}")
        ctx.log(f"lcm: {desc}; built in {build_s:.1f} s")
        node = pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"]()
        common = {"seed": 7, "width": size, "height": size, "batch_size": 1, "denoise": 1.0}

        def run_node(scheduler, steps, guidance, h=handle):
            return node.sample(h, cond, steps=steps, guidance=guidance, scheduler=scheduler, **common)[0]

        pipe = diffusers_pipeline(comps)

        def run_diffusers(guidance, steps=lcm_steps):
            kw = {}
            if comps.arch == "sdxl":
                kw = {"pooled_prompt_embeds": cond.pooled, "negative_pooled_prompt_embeds": cond.negative_pooled}
            return pipe(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
                        num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                        generator=torch.Generator().manual_seed(common["seed"]), output_type="pt", **kw).images

        run_node("lcm", 1, 1.0)  # warm-up (first-call allocations, kernel selection)
        run_diffusers(1.0, 1)
        ctx.log(f"lcm: node vs diffusers, {lcm_steps} LCM steps, {rounds} interleaved rounds")
        times, outs = measure.interleaved({"node": lambda: run_node("lcm", lcm_steps, 1.0),
                                           "diffusers": lambda: run_diffusers(1.0)}, rounds, ctx.sync)
        diff = (outs["node"].float().cpu() - outs["diffusers"].permute(0, 2, 3, 1).float().cpu()).abs().max().item()
        lcm1 = min(times["node"])
        ctx.log("lcm: LCM with CFG, then the default scheduler")
        lcm_cfg, _ = measure.timed(lambda: run_node("lcm", lcm_steps, 1.5), ctx.sync)
        default, _ = measure.timed(lambda: run_node("pipeline default", default_steps, 7.5), ctx.sync)
        default_name = type(make_scheduler("pipeline default", comps.scheduler_config)).__name__
        rows.append(goal_row(f"LCM {lcm_steps} steps vs {default_steps} steps of the default scheduler",
                             lcm1 / default, "<=", 0.2, "×",
                             f"guidance 1: {lcm1:.2f} s; {default_name} {default_steps} steps, guidance 7.5 (CFG): "
                             f"{default:.2f} s (one run); LCM with CFG (guidance 1.5) {lcm_cfg:.2f} s = "
                             f"{lcm_cfg / default:.3f}×; {desc}"))
        rows.append(goal_row("LCM Sampler node vs bare diffusers pipeline call", lcm1 / min(times["diffusers"]),
                             "<=", 1.05, "×",
                             f"{lcm_steps} LCM steps, guidance 1: node {lcm1:.2f} s, diffusers "
                             f"{min(times['diffusers']):.2f} s, min of {rounds} interleaved; max |difference| of the "
                             f"images {diff:.1e}"))
        if ctx.cuda:
            rows += cuda_rows(ctx, variant, lcm1, lambda h: run_node("lcm", lcm_steps, 1.0, h), handle, rounds)
    return rows


def cuda_rows(ctx, variant, fp16_time, run, handle, rounds) -> list[Row]:
    """CUDA only: fp32 vs fp16, classic attention vs SDPA, channels-last (each on LCM 4 steps, guidance 1)."""
    from diffusers.models.attention_processor import AttnProcessor

    rows = []
    with harness.fresh_cache():  # fp32 copy in a cache of its own
        h32 = make_handle(ctx, variant, "fp32")
        run(h32)
        t32, _ = measure.best_of(rounds, lambda: run(h32), ctx.sync)
    rows.append(Row("LCM 4 steps, fp16 vs fp32 (CUDA)", fp16_time / t32, "—", None, "×",
                    f"fp16 {fp16_time:.2f} s, fp32 {t32:.2f} s"))
    from visionkit_pack.models.core.cache import get_cache

    with get_cache().use(handle.spec) as c:
        procs = copy.copy(c.unet.attn_processors)
        c.unet.set_attn_processor(AttnProcessor())
        try:
            run(handle)
            classic, _ = measure.best_of(rounds, lambda: run(handle), ctx.sync)
        finally:
            c.unet.set_attn_processor(procs)
        rows.append(Row("LCM 4 steps, SDPA vs classic attention (CUDA, fp16)", fp16_time / classic, "—", None, "×",
                        f"SDPA (diffusers' default) {fp16_time:.2f} s, classic {classic:.2f} s"))
        import torch

        c.unet.to(memory_format=torch.channels_last)
        try:
            run(handle)
            cl, _ = measure.best_of(rounds, lambda: run(handle), ctx.sync)
        finally:
            c.unet.to(memory_format=torch.contiguous_format)
        rows.append(Row("LCM 4 steps, channels-last UNet vs default (CUDA, fp16)", cl / fp16_time, "—", None, "×",
                        f"channels-last {cl:.2f} s, default {fp16_time:.2f} s"))
    return rows


if __name__ == "__main__":
    sys.exit(harness.main_single("lcm"))
