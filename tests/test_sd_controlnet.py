"""ControlNet: the three file layouts load to the same diffusers model; one step's residuals equal diffusers'
ControlNetModel / MultiControlNetModel called the way StableDiffusion[XL]ControlNetPipeline calls them; the
start/end window; the Apply node's chain; Canny equal to cv2.Canny."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vk_testing import import_pack
from vk_testing import tiny_sd_extras as X

import_pack()
from visionkit_pack.models.sd import controlnet as C  # noqa: E402
from visionkit_pack.models.sd import controlnet_files as CF  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.sd.types import ControlEntry, GenerationError  # noqa: E402


def cn_dir(models_dir):
    return models_dir / "controlnet"


def diffusers_reference(models_dir, name):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(str(cn_dir(models_dir) / name), local_files_only=True).eval()


def reference_image(image_bhwc, width, height, batch, cfg, guess=False):
    """diffusers' StableDiffusionControlNetPipeline.prepare_image on the same tensor (one prompt, `batch` images)."""
    from diffusers import StableDiffusionControlNetPipeline
    from diffusers.image_processor import VaeImageProcessor

    ns = SimpleNamespace(control_image_processor=VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True,
                                                                   do_normalize=False))
    return StableDiffusionControlNetPipeline.prepare_image(
        ns, image=image_bhwc.permute(0, 3, 1, 2), width=width, height=height, batch_size=batch,
        num_images_per_prompt=batch, device="cpu", dtype=torch.float32, do_classifier_free_guidance=cfg,
        guess_mode=guess)


def step_inputs(arch, batch=2, cfg=True, seed=0):
    base_cfg = X.unet_config(arch)
    g = torch.Generator().manual_seed(seed)
    n = batch * (2 if cfg else 1)
    latents = torch.randn(batch, 4, 8, 8, generator=g)
    lmi = torch.cat([latents] * 2) if cfg else latents
    ehs = torch.randn(n, 7, base_cfg["cross_attention_dim"], generator=g)
    added = None
    if arch == "sdxl":
        added = {"text_embeds": torch.randn(n, 32, generator=g), "time_ids": torch.rand(n, 6, generator=g) * 1024}
    return lmi, torch.tensor(601), ehs, added


def hint(seed=1, h=64, w=64, b=1):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed))


def load(pack, name):
    (handle,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetLoader"]().load(name)
    return handle


def apply(pack, handle, image, strength=1.0, start=0.0, end=1.0, chain=None):
    (chain,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetApply"]().apply(handle, image, strength, start, end, chain)
    return chain


def assert_residuals_close(got, want, tol=1e-5):
    (gd, gm), (wd, wm) = got, want
    assert len(gd) == len(wd)
    for a, b in zip(gd, wd):
        assert a.shape == b.shape and (a - b).abs().max().item() < tol, (a - b).abs().max().item()
    assert (gm - wm).abs().max().item() < tol
    assert max(float(w.abs().max()) for w in wd) > 1e-2  # the residuals are not trivially zero


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("arch, names", [
    ("sd15", ["tiny-sd15-controlnet", "tiny-sd15-controlnet.safetensors", "tiny-sd15-controlnet-ldm.safetensors"]),
    ("sdxl", ["tiny-sdxl-controlnet", "tiny-sdxl-controlnet.safetensors"]),
])
def test_folder_single_file_and_ldm_layouts_load_the_same_model(pack, models_dir, arch, names):
    want = diffusers_reference(models_dir, f"tiny-{arch}-controlnet").state_dict()
    for name in names:
        handle = load(pack, name)
        assert handle.arch == arch and handle.name == name
        with get_cache().use(handle.spec) as cn:
            got = cn.state_dict()
            assert sorted(got) == sorted(want)
            assert all(torch.equal(got[k], want[k]) for k in want), name
            assert list(cn.config.block_out_channels) == [32, 64]
    if arch == "sd15":  # the fixture's LDM file is what diffusers' own single-file loader reads too
        from diffusers import ControlNetModel

        theirs = ControlNetModel.from_single_file(str(cn_dir(models_dir) / "tiny-sd15-controlnet-ldm.safetensors"),
                                                  config=str(cn_dir(models_dir) / "tiny-sd15-controlnet"),
                                                  local_files_only=True).state_dict()
        assert all(torch.equal(theirs[k], want[k]) for k in want)


def test_configs_read_from_real_sd15_and_sdxl_shapes():
    """The real lllyasviel SD1.5 and diffusers SDXL ControlNet layouts (built on the meta device): the config read
    from the shapes equals the published one, also after a round trip through the original LDM names."""
    from diffusers import ControlNetModel

    sd15 = dict(cross_attention_dim=768, attention_head_dim=8)
    sdxl = dict(block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D"), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
                attention_head_dim=(5, 10, 20), use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    keys = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "addition_embed_type", "addition_time_embed_dim",
            "projection_class_embeddings_input_dim", "conditioning_embedding_out_channels", "mid_block_type")
    for arch, kw in (("sd15", sd15), ("sdxl", sdxl)):
        with torch.device("meta"):
            model = ControlNetModel(**kw)
        sd = model.state_dict()
        assert CF.detect_arch(sd) == arch
        for state in (sd, CF.convert_ldm_controlnet(X.controlnet_to_ldm(sd, model.config))):
            assert sorted(state) == sorted(sd)
            cfg = CF.config_from_state_dict(state, arch)
            norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
            assert {k: norm(cfg.get(k)) for k in keys} == {k: norm(model.config[k]) for k in keys}
            tl = model.config.transformer_layers_per_block
            assert norm(cfg["transformer_layers_per_block"]) == (norm(tl) if isinstance(tl, (list, tuple)) else [1] * 4)


def test_wrong_files_and_unsupported_variants_say_so(pack, models_dir, tmp_path):
    from safetensors.torch import save_file

    def file(sd, name):
        p = tmp_path / name
        save_file(sd, str(p))
        return str(p)

    def z():
        return torch.zeros(1)

    cases = [
        (str(models_dir / "sams" / "tiny_sam_vit.safetensors"), "not a ControlNet: it looks like a SAM"),
        (str(models_dir / "loras" / "tiny-sd15-lora-kohya.safetensors"), "not a ControlNet: it looks like a LoRA"),
        (file({"model.diffusion_model.input_blocks.0.0.weight": z()}, "ckpt.safetensors"), "full Stable Diffusion"),
        (file({"adapter.body.0.resnets.0.block1.weight": z()}, "t2i.safetensors"), "T2I-Adapter"),
        (file({"lora_controlnet": z(), "input_hint_block.0.weight": z(), "input_blocks.1.0.in_layers.2.up": z()},
              "cl.safetensors"), "Control-LoRA"),
        (file({"controlnet_cond_embedding.conv_in.weight": z(), "task_embedding": z()}, "u.safetensors"), "Union"),
    ]
    for path, msg in cases:
        with pytest.raises(C.ControlNetError, match=msg):
            C.load_controlnet(path)
    sd2 = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024)}
    with pytest.raises(C.ControlNetError, match="Stable Diffusion 2.x"):
        CF.detect_arch(sd2)
    assert len(get_cache()) == 0


# ------------------------------------------------------------------ residuals against diffusers
@pytest.mark.parametrize("arch, name", [("sd15", "tiny-sd15-controlnet-ldm.safetensors"),
                                        ("sdxl", "tiny-sdxl-controlnet.safetensors")])
def test_one_step_equals_diffusers_controlnet_as_the_pipeline_calls_it(pack, models_dir, arch, name):
    image = hint(h=50, w=70)  # another size: resized to the output size like diffusers
    chain = apply(pack, load(pack, name), image, strength=0.8)
    lmi, t, ehs, added = step_inputs(arch)
    comps = X.tiny_base(arch)
    with C.ControlNetRun(chain, comps, do_classifier_free_guidance=True) as run:
        got = run.residuals(lmi, t, ehs, 0, 4, added)
        again = run.residuals(lmi, t, ehs, 3, 4, added)
    assert all(torch.equal(a, b) for a, b in zip(got[0], again[0]))
    ref = diffusers_reference(models_dir, f"tiny-{arch}-controlnet")  # its config.json: SDXL time-embed width 8
    cond = reference_image(image, 64, 64, 2, cfg=True)
    with torch.no_grad():
        want = ref(lmi, t, encoder_hidden_states=ehs, controlnet_cond=cond, conditioning_scale=0.8,
                   added_cond_kwargs=added, guess_mode=False, return_dict=False)
    assert_residuals_close(got, want)
    one = C.controlnet_residuals(chain, comps, lmi, t, ehs, 0, 4, added, do_classifier_free_guidance=True)
    assert_residuals_close(one, want)
    with get_cache().use(chain[0].model.spec) as cn:  # the per-run fix of the single file's guess is undone
        assert cn.add_time_proj.num_channels == 256 if arch == "sdxl" else not hasattr(cn, "add_time_proj")


def test_multi_controlnet_sums_like_diffusers_multicontrolnet(pack, models_dir):
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    a, b = hint(1), hint(2)
    chain = apply(pack, load(pack, "tiny-sd15-controlnet"), a, strength=0.8)
    chain = apply(pack, load(pack, "tiny-sd15-controlnet-b.safetensors"), b, strength=1.3, chain=chain)
    assert len(chain) == 2
    lmi, t, ehs, _ = step_inputs("sd15", batch=1, cfg=True)
    with C.ControlNetRun(chain, X.tiny_base("sd15"), do_classifier_free_guidance=True) as run:
        got = run.residuals(lmi, t, ehs, 1, 4)
    from diffusers import ControlNetModel
    from visionkit_pack.models.core.weights import load_state_dict

    second = diffusers_reference(models_dir, "tiny-sd15-controlnet")
    second = ControlNetModel.from_config(second.config).eval()
    second.load_state_dict(load_state_dict(str(cn_dir(models_dir) / "tiny-sd15-controlnet-b.safetensors")))
    multi = MultiControlNetModel([diffusers_reference(models_dir, "tiny-sd15-controlnet"), second])
    with torch.no_grad():
        want = multi(lmi, t, encoder_hidden_states=ehs, controlnet_cond=[reference_image(a, 64, 64, 1, True),
                     reference_image(b, 64, 64, 1, True)], conditioning_scale=[0.8, 1.3], guess_mode=False,
                     return_dict=False)
    assert_residuals_close(got, want)


def test_start_end_window_and_strength(pack, models_dir):
    handle = load(pack, "tiny-sd15-controlnet")
    early = apply(pack, handle, hint(1), 1.0, 0.0, 0.5)
    both = apply(pack, handle, hint(2), 0.5, 0.25, 1.0, chain=early)
    lmi, t, ehs, _ = step_inputs("sd15", batch=1, cfg=False)
    comps = X.tiny_base("sd15")
    n = 4
    # step i of 4 acts when start <= i/4 < end: step 0 the first only, step 1 both, steps 2 and 3 the second only
    assert [C.is_active(early[0], i, n) for i in range(n)] == [True, True, False, False]
    assert [C.is_active(both[1], i, n) for i in range(n)] == [False, True, True, True]
    with C.ControlNetRun(both, comps) as run:
        per_step = [run.residuals(lmi, t, ehs, i, n) for i in range(n)]
    with C.ControlNetRun(early, comps) as run:
        first_only = run.residuals(lmi, t, ehs, 0, n)
        assert run.residuals(lmi, t, ehs, 2, n) == (None, None)
    second_only = C.controlnet_residuals(both[1:], comps, lmi, t, ehs, 3, n)
    assert all(torch.equal(a, b) for a, b in zip(per_step[0][0], first_only[0]))
    assert all(torch.equal(a, b) for a, b in zip(per_step[3][0], second_only[0]))
    summed = [a + b for a, b in zip(first_only[0], second_only[0])]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(per_step[1][0], summed))
    zero = apply(pack, handle, hint(1), 0.0)
    assert C.controlnet_residuals(zero, comps, lmi, t, ehs, 0, n) == (None, None)


def test_hint_preparation_batches_and_checks(pack):
    one = hint(3, 40, 30)
    for cfg in (False, True):
        got = C.prepare_hint(one, 64, 48, 3, do_classifier_free_guidance=cfg)
        assert torch.equal(got, reference_image(one, 48, 64, 3, cfg))
    per_image = hint(4, 64, 64, b=3)
    got = C.prepare_hint(per_image, 64, 64, 3, do_classifier_free_guidance=True)
    assert torch.equal(got[:3], per_image.permute(0, 3, 1, 2)) and torch.equal(got[3:], got[:3])
    with pytest.raises(C.ControlNetError, match="2 images but 3 images are generated"):
        C.prepare_hint(hint(4, b=2), 64, 64, 3)
    rgba = torch.cat([one, torch.ones(1, 40, 30, 1)], dim=-1)
    assert torch.equal(C.prepare_hint(rgba, 64, 48, 1), C.prepare_hint(one, 64, 48, 1))


def test_mismatched_controlnets_are_refused_with_the_reason(pack, models_dir):
    lmi, t, ehs, _ = step_inputs("sd15", batch=1, cfg=False)
    sd15_chain = apply(pack, load(pack, "tiny-sd15-controlnet"), hint(1))
    with pytest.raises(GenerationError, match="this ControlNet is SD1.5, the pipeline is SDXL"):
        with C.ControlNetRun(sd15_chain, X.tiny_base("sdxl")):
            pass
    with pytest.raises(GenerationError, match="this ControlNet is SDXL but the control chain .* is for SD1.5"):
        apply(pack, load(pack, "tiny-sdxl-controlnet"), hint(1), chain=sd15_chain)
    other = apply(pack, load(pack, "for-tiny-sd15-ldm.safetensors"), hint(1))  # SD1.5, for another UNet
    with pytest.raises(C.ControlNetError, match="made for another model"):
        C.controlnet_residuals(other, X.tiny_base("sd15"), lmi, t, ehs, 0, 1)


# ------------------------------------------------------------------ nodes
def test_nodes_are_registered_with_their_types(pack):
    n = pack.NODE_CLASS_MAPPINGS
    assert n["VisionKitControlNetLoader"].RETURN_TYPES == ("VK_CONTROLNET_MODEL",)
    assert n["VisionKitControlNetLoader"].CATEGORY == "VisionKit/loaders"
    assert n["VisionKitControlNetApply"].CATEGORY == "VisionKit/generation"
    assert n["VisionKitControlNetApply"].RETURN_TYPES == ("VK_CONTROL",)
    assert n["VisionKitCannyEdges"].CATEGORY == "VisionKit/preprocessors"
    names = n["VisionKitControlNetLoader"].INPUT_TYPES()["required"]["controlnet_name"][0]
    assert {"tiny-sd15-controlnet", "tiny-sd15-controlnet-ldm.safetensors", "tiny-sdxl-controlnet"} <= set(names)
    assert n["VisionKitControlNetLoader"].VALIDATE_INPUTS("tiny-sd15-controlnet") is True
    assert "was not found" in n["VisionKitControlNetLoader"].VALIDATE_INPUTS("control_v11p_sd15_canny.pth")
    apply_node = n["VisionKitControlNetApply"]
    # no VALIDATE_INPUTS (ComfyUI would give the start < end message to both inputs): ranges are ComfyUI's
    # min/max at /prompt, the window is checked when the node runs
    from visionkit_pack.nodes.sd_controlnet import check_window

    assert not hasattr(apply_node, "VALIDATE_INPUTS")
    assert check_window(0.0, 1.0, 1.0) is True
    assert "must be below" in check_window(0.6, 0.6, 1.0)
    assert "must be below" in check_window(0.8, 0.2, 1.0)
    for k in ("start_percent", "end_percent"):
        assert (apply_node.INPUT_TYPES()["required"][k][1]["min"], apply_node.INPUT_TYPES()["required"][k][1]["max"]) \
            == (0.0, 1.0)
    inputs = apply_node.INPUT_TYPES()
    assert "control" in inputs["optional"] and "conditioning" not in str(list(inputs["required"]))
    assert inputs["required"]["strength"][1]["max"] == 10.0


def test_apply_node_appends_a_controlnet_entry(pack):
    handle = load(pack, "tiny-sd15-controlnet")
    rgba = torch.rand(1, 16, 16, 4)
    chain = apply(pack, handle, rgba, 0.7, 0.1, 0.9)
    (e,) = chain
    assert isinstance(e, ControlEntry) and e.kind == "controlnet" and e.model is handle and e.arch == "sd15"
    assert (e.strength, e.start, e.end) == (0.7, 0.1, 0.9) and e.image.shape == (1, 16, 16, 3)
    chain2 = apply(pack, handle, rgba, chain=chain)
    assert len(chain2) == 2 and chain2[0] is e and len(chain) == 1
    with pytest.raises(ValueError, match="must be below"):
        apply(pack, handle, rgba, 1.0, 0.5, 0.5)


# ------------------------------------------------------------------ Canny
def test_canny_equals_cv2_on_the_uint8_grayscale(pack):
    import cv2

    g = torch.Generator().manual_seed(5)
    img = torch.rand(2, 40, 56, 3, generator=g) * 0.3
    img[:, 10:30, 12:40] += 0.6  # a bright block: clear edges
    node = pack.NODE_CLASS_MAPPINGS["VisionKitCannyEdges"]
    assert node.INPUT_TYPES()["required"]["low_threshold"][1]["default"] == 100
    assert node.INPUT_TYPES()["required"]["high_threshold"][1]["default"] == 200
    for lo, hi in ((100, 200), (20, 60)):
        (out,) = node().run(img, lo, hi)
        assert out.shape == (2, 40, 56, 3) and out.dtype == torch.float32
        for i in range(2):
            u8 = (img[i] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            want = cv2.Canny(cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY), lo, hi)
            for c in range(3):
                assert np.array_equal((out[i, ..., c] * 255).to(torch.uint8).numpy(), want)
        assert set(out.unique().tolist()) <= {0.0, 1.0} and out.max() == 1.0
    # low > high: refused when the node runs (a VALIDATE_INPUTS would repeat it on both thresholds)
    assert not hasattr(node, "VALIDATE_INPUTS")
    with pytest.raises(ValueError, match="swap them"):
        node().run(img, 200, 100)


def test_residuals_feed_the_tiny_pipeline_unet(pack, models_dir):
    """With the pipeline loader's tiny SD1.5 / SDXL pipelines (tests/vk_testing/tiny_sd.py): the ControlNets made
    for them load (LDM file; SDXL single file whose size-embedding width is corrected per run) and their
    residuals go into the pipeline's UNet as the sampler will pass them."""
    from visionkit_pack.models.sd import pipeline as sd_pipeline
    from visionkit_pack.models.sd.types import use_components

    for arch, name in (("sd15", "for-tiny-sd15-ldm.safetensors"), ("sdxl", "for-tiny-sdxl.safetensors")):
        handle = sd_pipeline.load_pipeline(str(models_dir / "diffusers" / f"tiny-{arch}"))
        chain = apply(pack, load(pack, name), hint(1), 1.5)
        with use_components(handle) as comps:
            unet = comps.unet
            cfg, p = unet.config, next(unet.parameters())
            g = torch.Generator().manual_seed(0)
            lmi = torch.randn(2, 4, 8, 8, generator=g).to(p.dtype)
            ehs = torch.randn(2, 7, cfg.cross_attention_dim, generator=g).to(p.dtype)
            added = None
            if arch == "sdxl":
                pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
                added = {"text_embeds": torch.randn(2, pooled, generator=g).to(p.dtype),
                         "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2).to(p.dtype)}
            with C.ControlNetRun(chain, comps, do_classifier_free_guidance=True) as run:
                down, mid = run.residuals(lmi, torch.tensor(500), ehs, 0, 1, added)
            with torch.no_grad():
                plain = unet(lmi, 500, ehs, added_cond_kwargs=added).sample
                steered = unet(lmi, 500, ehs, added_cond_kwargs=added, down_block_additional_residuals=down,
                               mid_block_additional_residual=mid).sample
            assert steered.shape == plain.shape and (steered - plain).abs().max() > 1e-3
