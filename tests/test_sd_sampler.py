"""LCM Sampler: equal to diffusers' own pipelines on the same weights, seed and scheduler.

The node loads the SINGLE-FILE fixtures (checkpoints/tiny-*.safetensors, tests/vk_testing/tiny_sd.py); the
references are built by diffusers from the DIFFUSERS FOLDER fixtures (StableDiffusion[XL]Pipeline,
Img2Img, Inpaint, ControlNet pipelines .from_pretrained(folder, local_files_only=True)). Both get the prompt
embeddings of VisionKit Prompt Encode (prompt_embeds / negative_prompt_embeds / pooled), so only the sampler is
compared. diffusers draws every random number itself from `generator=torch.Generator().manual_seed(seed)`
(VAE posterior samples, initial noise, LCM's per-step noise): equality means the sampler draws the same numbers
in the same order. Images are compared with atol 1e-4.
"""
from __future__ import annotations

import json

import pytest
import torch

from vk_testing import import_pack
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture, for the T2 test)

import_pack()
from visionkit_pack.models.core import host  # noqa: E402
from visionkit_pack.models.sd import sampler as S  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.sd.pipeline import build_tokenizer, load_pipeline, use_pipeline  # noqa: E402
from visionkit_pack.models.sd.types import ControlEntry, GenerationError  # noqa: E402

ATOL = 1e-4
NODE = "VisionKitLCMSampler"
PROMPT, NEGATIVE = "a photo of a cat", "blurry, low quality"


# ------------------------------------------------------------------ helpers
def handle(models_dir, name):
    return load_pipeline(str(models_dir / "checkpoints" / f"{name}.safetensors"))


def encode(pack, h, positive=PROMPT, negative=NEGATIVE, **kw):
    return pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(h, positive, negative, **kw)[0]


def sample(pack, h, cond, **kw):
    args = {"seed": 1234, "steps": 4, "guidance": 1.0, "scheduler": "lcm", "width": 64, "height": 64, "batch_size": 1,
            "denoise": 1.0}
    args.update(kw)
    node = pack.NODE_CLASS_MAPPINGS[NODE]
    consts = {k: v for k, v in args.items() if k not in ("control", "image", "mask")}
    assert S.check_settings(**consts) is None
    return node().sample(h, cond, **args)[0]


def reference_pipe(models_dir, cls_name, name, scheduler="lcm", **kw):
    import diffusers

    cls = getattr(diffusers, cls_name)
    if "XL" not in cls_name:
        kw.update(safety_checker=None, requires_safety_checker=False)
    if name == "tiny-sd15-inpaint":  # the folder without tokenizer files: the standard CLIP tokenizer
        kw["tokenizer"] = build_tokenizer()
    pipe = cls.from_pretrained(str(models_dir / "diffusers" / name), local_files_only=True, torch_dtype=torch.float32,
                               **kw)
    cfg = pipe.scheduler.config
    if scheduler == "lcm":
        pipe.scheduler = diffusers.LCMScheduler.from_config(cfg)
    elif scheduler == "euler ancestral":
        pipe.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(cfg)
    elif scheduler == "dpm++ 2m karras":
        pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    else:
        assert scheduler == "pipeline default"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_reference(pipe, cond, seed, **kw):
    kw.update(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
              generator=torch.Generator().manual_seed(seed), output_type="pt")
    if cond.arch == "sdxl":
        ids, nids = cond.add_time_ids, cond.negative_add_time_ids
        kw.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=cond.negative_pooled,
                  original_size=ids[0:2], crops_coords_top_left=ids[2:4], target_size=ids[4:6],
                  negative_original_size=nids[0:2], negative_crops_coords_top_left=nids[2:4],
                  negative_target_size=nids[4:6])
    with torch.no_grad():
        return pipe(**kw).images.permute(0, 2, 3, 1)


def assert_close(got, want, atol=ATOL):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    err = (got - want).abs().max().item()
    assert err <= atol, err
    assert got.std().item() > 1e-2  # an image, not a constant


def test_image(seed=5, h=64, w=64, b=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(b, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
    return base.permute(0, 2, 3, 1).contiguous()


test_image.__test__ = False


def box_mask(h=64, w=64, box=(16, 20, 48, 44)):
    m = torch.zeros(1, h, w)
    m[:, box[0]:box[2], box[1]:box[3]] = 1.0
    return m


def unet_snapshot(h):
    """The UNet's parameters (objects and values) with no LoRA applied (see assert_unet_unchanged)."""
    from visionkit_pack.models.sd import lora_apply as sd_lora_apply

    with use_pipeline(h) as comps:
        sd_lora_apply.release(comps.unet)
        return {n: (p, p.detach().clone()) for n, p in comps.unet.named_parameters()}


def assert_unet_unchanged(h, snap):
    """Every parameter is the same object with the same value, once a LoRA stack a run left applied (kept,
    recorded, for the next run with the same stack: models/sd/lora_apply.py) is taken off."""
    from visionkit_pack.models.sd import lora_apply as sd_lora_apply

    with use_pipeline(h) as comps:
        sd_lora_apply.release(comps.unet)
        now = dict(comps.unet.named_parameters())
    assert set(now) == set(snap)
    for n, (obj, value) in snap.items():
        assert now[n] is obj and torch.equal(now[n], value), n


# ------------------------------------------------------------------ the node
def test_node_is_registered_with_its_inputs(pack):
    node = pack.NODE_CLASS_MAPPINGS[NODE]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[NODE] == "VisionKit LCM Sampler"
    assert node.CATEGORY == "VisionKit/generation" and node.RETURN_TYPES == ("IMAGE",)
    req, opt = node.INPUT_TYPES()["required"], node.INPUT_TYPES()["optional"]
    assert req["pipeline"][0] == "VK_PIPELINE" and req["conditioning"][0] == "VK_CONDITIONING"
    assert {k: v[0] for k, v in opt.items()} == {"control": "VK_CONTROL", "image": "IMAGE", "mask": "MASK"}
    assert req["scheduler"][0][:2] == ["lcm", "pipeline default"] and req["scheduler"][1]["default"] == "lcm"
    assert req["seed"][1]["max"] == 2 ** 64 - 1 and req["width"][1]["step"] == 8
    assert req["steps"][1]["min"] == 1 and req["steps"][1]["max"] == 100
    assert all("tooltip" in v[1] for v in {**req, **opt}.values())


# ------------------------------------------------------------------ text-to-image against diffusers
@pytest.mark.parametrize("scheduler,steps,guidance,batch", [
    ("lcm", 4, 1.0, 2),  # no negative pass
    ("lcm", 4, 2.0, 1),  # CFG (a UNet without guidance embedding: StableDiffusionPipeline + LCMScheduler)
    ("pipeline default", 3, 2.0, 1),  # the folder's own PNDM
    ("euler ancestral", 3, 1.5, 1),  # per-step noise from the generator
    ("dpm++ 2m karras", 3, 1.0, 1),
])
def test_txt2img_sd15_equals_diffusers(pack, models_dir, scheduler, steps, guidance, batch):
    h = handle(models_dir, "tiny-sd15")
    if scheduler not in ("lcm", "pipeline default"):
        # the single file's scheduler config (the original SD1.5 one, shipped) leaves timestep_spacing unset, so
        # Euler/DPM take their own default as in diffusers; the folder written by save_pretrained spells out PNDM's
        # "leading". Same loop, other input: these run the node on the folder, with the folder's config.
        h = load_pipeline(str(models_dir / "diffusers" / "tiny-sd15"))
    cond = encode(pack, h)
    got = sample(pack, h, cond, scheduler=scheduler, steps=steps, guidance=guidance, batch_size=batch, seed=77,
                 width=64, height=48)
    pipe = reference_pipe(models_dir, "StableDiffusionPipeline", "tiny-sd15", scheduler)
    want = run_reference(pipe, cond, 77, num_inference_steps=steps, guidance_scale=guidance, height=48, width=64,
                         num_images_per_prompt=batch)
    assert_close(got, want)
    if batch > 1:
        assert (got[0] - got[1]).abs().max() > 1e-2  # one generator, different noise per image


def test_txt2img_sdxl_equals_diffusers(pack, models_dir):
    h = handle(models_dir, "tiny-sdxl")
    cond = encode(pack, h, width=512, height=384, crop_w=8, crop_h=16, target_width=640, target_height=512)
    pipe = reference_pipe(models_dir, "StableDiffusionXLPipeline", "tiny-sdxl")
    for guidance in (1.0, 2.0):
        got = sample(pack, h, cond, guidance=guidance, seed=9)
        want = run_reference(pipe, cond, 9, num_inference_steps=4, guidance_scale=guidance, height=64, width=64)
        assert_close(got, want)


def test_longer_positive_than_negative_runs(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h, "cat " * 100, "")  # 154 vs 77 tokens: repeated to a common length under CFG
    assert cond.prompt_embeds.shape[1] == 154 and cond.negative_prompt_embeds.shape[1] == 77
    out = sample(pack, h, cond, guidance=2.0, steps=2)
    assert out.shape == (1, 64, 64, 3) and torch.isfinite(out).all()


# ------------------------------------------------------------------ image-to-image and inpainting
def test_img2img_equals_diffusers(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    image = test_image()
    got = sample(pack, h, cond, image=image, denoise=0.5, guidance=2.0, batch_size=2, width=512, height=512)
    pipe = reference_pipe(models_dir, "StableDiffusionImg2ImgPipeline", "tiny-sd15")
    want = run_reference(pipe, cond, 1234, image=image.permute(0, 3, 1, 2), strength=0.5, num_inference_steps=4,
                         guidance_scale=2.0, num_images_per_prompt=2)
    assert_close(got, want)
    # a size that is not a multiple of 8 is padded and cropped back
    odd = sample(pack, h, cond, image=test_image(h=60, w=52), denoise=0.75)
    assert odd.shape == (1, 60, 52, 3)
    with pytest.raises(GenerationError, match="leaves no step to run"):
        sample(pack, h, cond, image=image, denoise=0.2)  # 0.2 × 4 steps < 1 step


@pytest.mark.parametrize("denoise", [1.0, 0.75])
def test_inpaint_unet_equals_diffusers(pack, models_dir, denoise):
    h = handle(models_dir, "tiny-sd15-inpaint")
    assert h.inpaint
    cond = encode(pack, h)
    image, mask = test_image(), box_mask()
    got = sample(pack, h, cond, image=image, mask=mask, denoise=denoise, guidance=2.0)
    pipe = reference_pipe(models_dir, "StableDiffusionInpaintPipeline", "tiny-sd15-inpaint")
    assert pipe.unet.config.in_channels == 9
    want = run_reference(pipe, cond, 1234, image=image.permute(0, 3, 1, 2), mask_image=mask.unsqueeze(1),
                         strength=denoise, num_inference_steps=4, guidance_scale=2.0, height=64, width=64)
    assert_close(got, want)


def test_inpaint_unet_without_mask_or_image_runs(pack, models_dir):
    h = handle(models_dir, "tiny-sd15-inpaint")
    cond = encode(pack, h)
    assert sample(pack, h, cond, steps=2).shape == (1, 64, 64, 3)  # text-to-image: gray image, all repainted
    assert sample(pack, h, cond, steps=2, image=test_image(), denoise=0.5).shape == (1, 64, 64, 3)


def test_inpaint_blending_on_a_normal_unet_equals_diffusers_and_keeps_the_outside(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    image, mask = test_image(), box_mask()
    settings = S.SamplerSettings(steps=4, guidance=2.0, seed=1234, denoise=1.0)
    got, latents = S.generate(h, cond, settings, image=image, mask=mask, return_latents=True)
    pipe = reference_pipe(models_dir, "StableDiffusionInpaintPipeline", "tiny-sd15")
    assert pipe.unet.config.in_channels == 4
    want = run_reference(pipe, cond, 1234, image=image.permute(0, 3, 1, 2), mask_image=mask.unsqueeze(1),
                         strength=1.0, num_inference_steps=4, guidance_scale=2.0, height=64, width=64)
    assert_close(got, want)
    assert_close(sample(pack, h, cond, image=image, mask=mask, guidance=2.0), want)  # the node: the same
    # outside the mask the final latents ARE the original's (the VAE posterior sample, the run's first draw), and
    # the output is the VAE decode of those latents. (In pixels the outside then equals the VAE round trip of the
    # original only as far as the decoder is local: the tiny random VAE is not — GroupNorm over the whole image and
    # mid-block attention move far-away pixels by ~0.09 for a 0.05 latent change inside the mask — so the exact
    # check is made in latent space.)
    with use_pipeline(h) as comps, torch.no_grad():
        vae = comps.vae  # the node's VAE
        dist = vae.encode(image.permute(0, 3, 1, 2).contiguous() * 2 - 1).latent_dist
        original = dist.sample(torch.Generator().manual_seed(1234)) * vae.config.scaling_factor
        decoded = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    keep = (torch.nn.functional.interpolate(mask.unsqueeze(1), size=latents.shape[2:]) < 0.5).expand_as(latents)
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(latents[keep], original[keep])
    assert not torch.allclose(latents[~keep], original[~keep], atol=1e-2)  # inside: repainted
    assert_close(got, decoded, atol=1e-6)


# ------------------------------------------------------------------ ControlNet
def _tiny_controlnet(seed):
    from vk_testing import tiny_sd_extras as X
    from vk_testing.tiny_sd import tiny_components

    return X.tiny_controlnet("sd15", seed, tiny_components("sd15")["unet"])


def test_controlnet_and_multi_controlnet_equal_diffusers(pack, models_dir, tmp_path):
    from visionkit_pack.models.sd.controlnet import load_controlnet
    from vk_testing import tiny_sd_extras as X

    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    cn1 = _tiny_controlnet(13)  # = controlnet/for-tiny-sd15-ldm.safetensors (the fixture's recipe)
    cn2 = _tiny_controlnet(21)
    X._save_controlnet(cn2, tmp_path, "second")  # a diffusers single file
    hint1, hint2 = test_image(seed=11), test_image(seed=12)
    loader, apply = (pack.NODE_CLASS_MAPPINGS[k]() for k in ("VisionKitControlNetLoader", "VisionKitControlNetApply"))
    (m1,) = loader.load("for-tiny-sd15-ldm.safetensors")
    m2 = load_controlnet(str(tmp_path / "second.safetensors"))
    # windows on step boundaries (4 steps): diffusers keeps a ControlNet at step i when start <= i/n and
    # (i+1)/n <= end; VisionKit when start <= i/n < end — the same steps here
    (one,) = apply.apply(m1, hint1, 1.5, 0.25, 0.75)
    got = sample(pack, h, cond, control=one, guidance=2.0)
    pipe = reference_pipe(models_dir, "StableDiffusionControlNetPipeline", "tiny-sd15", controlnet=cn1)
    want = run_reference(pipe, cond, 1234, image=hint1.permute(0, 3, 1, 2), num_inference_steps=4, guidance_scale=2.0,
                         height=64, width=64, controlnet_conditioning_scale=1.5, control_guidance_start=0.25,
                         control_guidance_end=0.75)
    assert_close(got, want)
    assert (got - sample(pack, h, cond, guidance=2.0)).abs().max() > 1e-3  # the ControlNet did something
    (two,) = apply.apply(m2, hint2, 0.7, 0.5, 1.0, one)
    got = sample(pack, h, cond, control=two, guidance=2.0)
    pipe = reference_pipe(models_dir, "StableDiffusionControlNetPipeline", "tiny-sd15", controlnet=[cn1, cn2])
    want = run_reference(pipe, cond, 1234, image=[hint1.permute(0, 3, 1, 2), hint2.permute(0, 3, 1, 2)],
                         num_inference_steps=4, guidance_scale=2.0, height=64, width=64,
                         controlnet_conditioning_scale=[1.5, 0.7], control_guidance_start=[0.25, 0.5],
                         control_guidance_end=[0.75, 1.0])
    assert_close(got, want)


# ------------------------------------------------------------------ LoRA, cancel, the cache
def test_lora_changes_the_output_and_leaves_the_cached_unet_bit_identical(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    (with_lora,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 0.0)
    snap = unet_snapshot(h)
    plain = sample(pack, h, cond)
    lora = sample(pack, with_lora, cond)
    assert (plain - lora).abs().max() > 1e-3
    assert_unet_unchanged(h, snap)
    assert torch.equal(sample(pack, h, cond), plain)  # nothing of the LoRA stayed behind
    assert all(not e["in_use"] for e in get_cache().entries())


class Interrupted(Exception):
    pass


def test_cancel_mid_run_undoes_the_patches_and_the_next_run_works(pack, models_dir, monkeypatch):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    (with_lora,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 0.0)
    settings = S.SamplerSettings(steps=4, seed=3, width=64, height=64)
    clean = S.generate(with_lora, cond, settings)
    snap = unet_snapshot(h)
    done = []
    real = host.throw_if_cancelled

    def cancel_after_two_steps():
        if len(done) >= 2:
            raise Interrupted("cancelled by the user")

    monkeypatch.setattr(host, "throw_if_cancelled", cancel_after_two_steps)
    with pytest.raises(Interrupted):
        S.generate(with_lora, cond, settings, progress=lambda n, total: done.append((n, total)))
    assert done == [(1, 4), (2, 4)]
    monkeypatch.setattr(host, "throw_if_cancelled", real)
    assert all(not e["in_use"] for e in get_cache().entries())  # nothing left pinned
    assert_unet_unchanged(h, snap)  # the LoRA patch was undone
    assert torch.equal(S.generate(with_lora, cond, settings), clean)


# ------------------------------------------------------------------ clear messages
@pytest.mark.parametrize("kw,msg", [
    ({"width": 100}, "width 100 is not a multiple of 8.*96 or 104"),
    ({"height": 8}, "height 8 is outside 16"),
    ({"steps": 0}, "steps 0 is outside 1..100"),
    ({"denoise": 1.5}, "denoise 1.5 is outside 0.0..1.0"),
    ({"seed": -1}, "seed -1 is outside"),
    ({"guidance": -1.0}, "guidance -1.0 is outside"),
    ({"batch_size": 0}, "batch_size 0 is outside"),
    ({"scheduler": "karras"}, "scheduler 'karras' is not one of: lcm, pipeline default"),
])
def test_bad_settings_are_refused_before_sampling(pack, kw, msg):
    import re

    # No VALIDATE_INPUTS (it would repeat one message on every input it names): ComfyUI range-checks the
    # widgets at /prompt (the same bounds as check_settings, asserted here), and generate() refuses what ComfyUI
    # cannot see (a width not a multiple of 8, NaN, a linked value) with this check before it samples.
    node = pack.NODE_CLASS_MAPPINGS[NODE]
    assert not hasattr(node, "VALIDATE_INPUTS")
    got = S.check_settings(**kw)
    assert got is not None and re.search(msg, got), got
    assert S.check_settings(width=512, height=768, steps=4, denoise=0.5, seed=2 ** 64 - 1) is None
    (name, value), = kw.items()
    opts = node.INPUT_TYPES()["required"][name]
    if name == "scheduler":
        assert value not in opts[0]
    elif name != "width":  # 100 is in range: not a multiple of 8 is only seen by check_settings
        assert value < opts[1]["min"] or value > opts[1]["max"], (name, opts)


def test_wrong_inputs_say_what_to_do(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    with pytest.raises(ValueError, match="mask has a batch of 3 but image has 2"):
        sample(pack, h, cond, image=test_image(b=2), mask=box_mask().repeat(3, 1, 1))
    with pytest.raises(GenerationError, match="a MASK needs an IMAGE"):
        sample(pack, h, cond, mask=box_mask())
    with pytest.raises(GenerationError, match="steps"):
        S.generate(h, cond, S.SamplerSettings(steps=0, width=64, height=64))
    with pytest.raises(GenerationError, match="'t2i-adapter' entries .* not available in the VisionKit sampler"):
        sample(pack, h, cond, control=(ControlEntry(kind="t2i-adapter", model=None, arch="sd15"),))
    with pytest.raises(GenerationError, match="IP-Adapter entry's model must come from VisionKit Load IP-Adapter"):
        sample(pack, h, cond, control=(ControlEntry(kind="ipadapter", model=None, arch="sd15"),))
    with pytest.raises(GenerationError, match="at most 50 steps"):
        sample(pack, h, cond, steps=60)
    hx = handle(models_dir, "tiny-sdxl")
    with pytest.raises(GenerationError, match="encoded for SD1.5, the pipeline is SDXL"):
        sample(pack, hx, cond)
    (cn,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetLoader"]().load("for-tiny-sd15-ldm.safetensors")
    (chain,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetApply"]().apply(cn, test_image(), 1.0, 0.0, 1.0)
    with pytest.raises(GenerationError, match="this ControlNet is SD1.5, the pipeline is SDXL"):
        sample(pack, hx, encode(pack, hx), control=chain)


def test_small_pieces(pack):
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    w = torch.tensor([0.0, 0.5, 7.5])
    for dim in (256, 33):
        want = StableDiffusionPipeline.get_guidance_scale_embedding(None, w, dim)
        assert torch.allclose(S.guidance_embedding(w, dim), want)
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=8, force_upcast=True).half()
    comps = type("C", (), {"arch": "sdxl", "vae": vae})()
    run_vae = S._vae_for_run(comps)
    assert run_vae is not vae and run_vae.dtype == torch.float32 and vae.dtype == torch.float16
    comps.arch = "sd15"
    assert S._vae_for_run(comps) is vae


# ------------------------------------------------------------------ a workflow in API format
def lcm_chain(seed: int, height: int) -> dict:
    """API-format nodes 1-4: tiny SD1.5 pipeline -> LoRA -> prompt -> LCM Sampler (batch 2, 64 wide)."""
    return {
        "1": {"class_type": "VisionKitPipelineLoader", "inputs": {"model_name": "checkpoints/tiny-sd15.safetensors",
                                                                  "dtype": "auto", "vae_name": "(from checkpoint)"}},
        "2": {"class_type": "VisionKitLoraLoader", "inputs": {"pipeline": ["1", 0],
                                                              "lora_name": "for-tiny-sd15.safetensors",
                                                              "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "VisionKitPromptEncode", "inputs": {"pipeline": ["2", 0], "positive": PROMPT,
                                                                "negative": NEGATIVE, "stop_at_clip_layer": 0}},
        "4": {"class_type": NODE, "inputs": {"pipeline": ["2", 0], "conditioning": ["3", 0], "seed": seed,
                                             "steps": 4, "guidance": 1.5, "scheduler": "lcm", "width": 64,
                                             "height": height, "batch_size": 2, "denoise": 1.0}},
    }


def test_api_workflow_loader_lora_prompt_sampler_upscale_save(pack, models_dir, tmp_path):
    from vk_testing.runner import WorkflowRunner

    prompt = {
        **lcm_chain(seed=42, height=64),
        "5": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": "tiny_RealESRGAN_x2plus.pth",
                                                                      "dtype": "auto"}},
        "6": {"class_type": "VisionKitUpscale", "inputs": {"upscale_model": ["5", 0], "image": ["4", 0],
                                                           "outscale": 0.0, "tile_size": 512, "tile_pad": 16}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "lcm"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "lcm_small"}},
    }
    res = WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(prompt)
    (small,), (big,) = res.saved["8"], res.saved["7"]
    assert small.shape == (2, 64, 64, 3) and big.shape == (2, 128, 128, 3)
    h = handle(models_dir, "tiny-sd15")
    (with_lora,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 1.0)
    direct = sample(pack, with_lora, encode(pack, with_lora), seed=42, guidance=1.5, batch_size=2)
    assert torch.equal(small, direct)
    from vk_testing.runner import WorkflowError

    # out of range: refused up front (ComfyUI's min/max); not a multiple of 8: refused when the sampler runs
    bad = {**prompt, "4": {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "width": 8}}}
    with pytest.raises(WorkflowError, match=r"width=8 outside \[16, 16384\]"):
        WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(bad)
    bad = {**prompt, "4": {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "width": 100}}}
    with pytest.raises(GenerationError, match="width 100 is not a multiple of 8"):
        WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(bad)


# ------------------------------------------------------------------ T2: inside a real ComfyUI
@pytest.mark.t2
def test_t2_sampler_in_comfyui(comfy):  # noqa: F811
    info = comfy.get_json("/object_info")[NODE]
    assert info["display_name"] == "VisionKit LCM Sampler" and info["category"] == "VisionKit/generation"
    assert info["output"] == ["IMAGE"] and info["input"]["optional"]["control"][0] == "VK_CONTROL"
    prompt = {
        **lcm_chain(seed=2 ** 64 - 1, height=48),
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    entry = comfy.run_prompt(prompt)
    assert len(entry["outputs"]["5"]["images"]) == 2
    # out of range: ComfyUI's own min check at /prompt, once (the sampler names no input in a VALIDATE_INPUTS)
    bad = {**prompt, "4": {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "width": 8}}}
    status, body = comfy.submit(bad)
    assert status == 400 and list(body["node_errors"]) == ["4"], (status, body)
    errors = body["node_errors"]["4"]["errors"]
    assert [(e["message"], e["details"]) for e in errors] == [("Value 8 smaller than min of 16", "width")], errors
    # not a multiple of 8: refused when the sampler runs, with the pack's message
    bad = {**prompt, "4": {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "width": 100}}}
    entry = comfy.run_prompt(bad, expect_success=False)
    assert entry["status"]["status_str"] == "error"
    text = json.dumps(entry["status"]["messages"])
    assert "width 100 is not a multiple of 8" in text and "use 96 or 104" in text, text[:2000]
