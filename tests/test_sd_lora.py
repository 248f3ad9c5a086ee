"""LoRA: every file format gives W + strength·alpha/rank·(up @ down) on the right modules, equal to diffusers'
own load_lora_weights + fuse_lora; a run without LoRAs gets the cached model back bit-identical (even after a run
that failed); chaining, strength 0, architecture and wrong-file messages. The mechanism (in place, once per
stack, threads, cancel, memory) is tested in test_sd_lora_apply.py."""
from __future__ import annotations

import pytest
import torch
from vk_testing import import_pack, tiers
from vk_testing import tiny_sd_extras as X

import_pack()
from visionkit_pack.models.sd import lora as L  # noqa: E402
from visionkit_pack.models.sd import lora_formats as LF  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.core.patching import RunPatches  # noqa: E402
from visionkit_pack.models.sd.types import GenerationError, LoraRef, use_components  # noqa: E402
from visionkit_pack.models.core.weights import load_state_dict  # noqa: E402

FORMATS = ("kohya", "peft", "diffusers-old")


def lora_path(models_dir, arch, fmt):
    return str(models_dir / "loras" / f"tiny-{arch}-lora-{fmt}.safetensors")


def ref(models_dir, arch, fmt, s_unet=1.0, s_text=1.0):
    return LoraRef(L.lora_spec(lora_path(models_dir, arch, fmt)), arch, s_unet, s_text, fmt)


def run_outputs(base):
    """UNet and text-encoder outputs on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500])
    ehs = torch.randn(2, 7, base.unet.config.cross_attention_dim, generator=g)
    added = None
    if base.arch == "sdxl":
        added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.rand(2, 6, generator=g) * 1024}
    ids = torch.randint(3, 1000, (2, 7), generator=g)
    with torch.no_grad():
        out = [base.unet(x, t, ehs, added_cond_kwargs=added).sample, base.text_encoder(ids).last_hidden_state]
        if base.text_encoder_2 is not None:
            out.append(base.text_encoder_2(ids).last_hidden_state)
    return out


def with_loras(base, refs):
    mods = base.vk_modules()
    with RunPatches(*mods) as p:
        n_unet = L.apply_loras(p, base, refs, "unet")
        n_text = L.apply_loras(p, base, refs, "text")
        return run_outputs(base), n_unet, n_text


def hand_fused(arch, loras):
    """The reference: the base model with W += s · alpha/rank · up @ down written out, from the ground truth
    layers the fixture made (fp16-rounded like the files), on module names, not file keys."""
    base = X.tiny_base(arch)
    with torch.no_grad():
        for layers, s_unet, s_text in loras:
            for comp, mods in layers.items():
                s = s_unet if comp == "unet" else s_text
                module = getattr(base, comp)
                for name, (down, up, alpha) in mods.items():
                    w = module.get_submodule(name).weight
                    d = up.half().float().flatten(1) @ down.half().float().flatten(1)
                    w += s * alpha / down.shape[0] * d.reshape(w.shape)
    return base


def assert_close(got, want, tol=1e-5):
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max().item() < tol, (g - w).abs().max().item()


# ------------------------------------------------------------------ parsing and resolution
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_every_format_parses_and_every_layer_finds_its_module(pack, models_dir, arch):
    base = X.tiny_base(arch)
    truth = X.tiny_lora_layers(base)
    for fmt in FORMATS:
        path = lora_path(models_dir, arch, fmt)
        lf = L.parse_lora(load_state_dict(path), fmt, L._metadata(path))
        assert lf.format == {"kohya": "kohya", "peft": "peft", "diffusers-old": "diffusers"}[fmt]
        assert lf.arch == (None if arch == "sd15" else "sdxl")
        assert L.check_fits(lf, base) == []
        resolved = {}
        for comp in lf.components():
            found, missing = L._resolve(lf, comp, getattr(base, comp))
            assert not missing
            resolved[comp] = sorted(t for _, t in found)
        assert resolved == {c: sorted(m) for c, m in truth.items()}, fmt


SDXL_UNET = dict(block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                 "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
SD15_UNET = dict(cross_attention_dim=768, attention_head_dim=8)


@pytest.mark.parametrize("cfg", [SD15_UNET, SDXL_UNET], ids=["sd15", "sdxl"])
def test_ldm_names_of_real_unets_round_trip_through_diffusers_checkpoint_conversion(cfg):
    """Every parameter of the real SD1.5 / SDXL UNet, renamed to LDM by the pack, comes back to the same
    diffusers name through diffusers' own single-file converter (convert_ldm_unet_checkpoint)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    prefixes = L.unet_ldm_prefixes(unet)
    names = [n for n, _ in unet.named_parameters()]
    ckpt = {}
    for i, n in enumerate(names):
        module, _, param = n.rpartition(".")
        ckpt[f"model.diffusion_model.{L.unet_ldm_name(module, prefixes)}.{param}"] = torch.tensor([float(i)])
    out = convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    assert sorted(out) == sorted(names)
    assert all(names[int(v.item())] == k for k, v in out.items())


def test_kohya_sdxl_names_map_like_diffusers_lora_conversion():
    """kohya's SDXL LoRA names (lora_unet_input_blocks_4_1_...) for every Linear/Conv2d of the real SDXL UNet,
    against diffusers' _maybe_map_sgm_blocks_to_diffusers + _convert_non_diffusers_lora_to_diffusers."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    table = L.module_table(unet, "unet")
    prefixes = L.unet_ldm_prefixes(unet)
    sd, mine = {}, []
    for n, m in unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            key = "lora_unet_" + L.unet_ldm_name(n, prefixes).replace(".", "_")
            sd[f"{key}.lora_down.weight"] = sd[f"{key}.lora_up.weight"] = torch.zeros(1)
            mine.append(table[key[len("lora_unet_"):]])
    converted, _ = _convert_non_diffusers_lora_to_diffusers(_maybe_map_sgm_blocks_to_diffusers(sd, unet.config))
    theirs = [LF._clean_dotted("unet", k[len("unet."):-len(".lora.down.weight")].replace("_lora", ""))
              for k in converted if k.endswith("down.weight")]
    assert sorted(mine) == sorted(theirs) and len(mine) > 700


def test_arch_detection_from_real_sizes_and_refusals(pack, models_dir):
    for arch, reason in (("sd15", "768 wide"), ("sdxl", "2048 wide")):
        _, lf = L.load_lora(str(models_dir / "loras" / f"real-size-{arch}-lora.safetensors"))
        assert lf.arch == arch and reason in lf.arch_reason
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    sd2 = {f"{k}.lora_down.weight": torch.zeros(4, 1024), f"{k}.lora_up.weight": torch.zeros(320, 4)}
    with pytest.raises(L.LoraError, match="Stable Diffusion 2.x"):
        L.parse_lora(sd2, "sd2.safetensors")
    loha = {"lora_unet_x.hada_w1_a": torch.zeros(1), "lora_unet_x.hada_w1_b": torch.zeros(1)}
    with pytest.raises(L.LoraError, match="LoHa"):
        L.parse_lora(loha, "loha.safetensors")
    half = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}
    with pytest.raises(L.LoraError, match="incomplete"):
        L.parse_lora(half, "half.safetensors")
    flux = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(8, 4)}
    lf = L.parse_lora(flux, "flux.safetensors")  # parses (kohya keys) but fits no SD model
    with pytest.raises(L.LoraError, match="does not fit"):
        L.check_fits(lf, X.tiny_base("sd15"))


def test_wrong_files_say_what_they_are(pack, models_dir, tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(ckpt))
    cases = {str(models_dir / "sams" / "tiny_sam_vit.safetensors"): "SAM",
             str(models_dir / "controlnet" / "tiny-sd15-controlnet.safetensors"): "ControlNet",
             str(models_dir / "controlnet" / "tiny-sd15-controlnet-ldm.safetensors"): "ControlNet",
             str(ckpt): "full Stable Diffusion checkpoint"}
    for path, what in cases.items():
        with pytest.raises(L.LoraError, match=f"is not a LoRA: it looks like .*{what}"):
            L.load_lora(path)
    assert len(get_cache()) == 0


# ------------------------------------------------------------------ application
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_every_format_equals_the_hand_fused_model(pack, models_dir, arch):
    truth = X.tiny_lora_layers(X.tiny_base(arch))
    want = run_outputs(hand_fused(arch, [(truth, 0.7, 1.3)]))
    plain = run_outputs(X.tiny_base(arch))
    assert (want[0] - plain[0]).abs().max() > 1e-2 and (want[1] - plain[1]).abs().max() > 1e-2  # the LoRA matters
    results = {}
    for fmt in FORMATS:
        got, n_unet, n_text = with_loras(X.tiny_base(arch), [ref(models_dir, arch, fmt, 0.7, 1.3)])
        assert n_unet == len(truth["unet"]) and n_text == sum(len(v) for c, v in truth.items() if c != "unet")
        assert_close(got, want)
        results[fmt] = got
    assert_close(results["peft"], results["kohya"], 1e-6)  # one LoRA, three formats, one result


def test_comfyui_saved_layout_equals_kohya(pack, models_dir, tmp_path):
    """ComfyUI's own LoRA layout: `diffusion_model.<LDM name>` and `text_encoders.clip_l.transformer.<name>`."""
    from safetensors.torch import save_file

    base = X.tiny_base("sd15")
    truth = X.tiny_lora_layers(base)
    cfg = X.unet_config("sd15")
    sd = {}
    for comp, mods in truth.items():
        for name, (down, up, alpha) in mods.items():
            key = (f"diffusion_model.{X.sgm_name(name, cfg)}" if comp == "unet"
                   else f"text_encoders.clip_l.transformer.text_model.{name}")
            sd.update({f"{key}.lora_down.weight": down.half(), f"{key}.lora_up.weight": up.half(),
                       f"{key}.alpha": torch.tensor(alpha)})
    save_file(sd, str(tmp_path / "comfy.safetensors"))
    comfy = LoraRef(L.lora_spec(str(tmp_path / "comfy.safetensors")), "sd15", 0.9, 0.9)
    got, n_unet, n_text = with_loras(X.tiny_base("sd15"), [comfy])
    assert (n_unet, n_text) == (len(truth["unet"]), len(truth["text_encoder"]))
    want, _, _ = with_loras(X.tiny_base("sd15"), [ref(models_dir, "sd15", "kohya", 0.9, 0.9)])
    assert_close(got, want, 1e-6)


def test_matches_diffusers_load_lora_weights_and_fuse(pack, models_dir):
    """diffusers' own loading (StableDiffusion[XL]Pipeline.lora_state_dict + load_lora_into_unet /
    _text_encoder + fuse_lora(lora_scale=s)) on the same file; needs peft (diffusers' LoRA backend)."""
    try:
        import peft  # noqa: F401
    except ImportError:
        tiers.missing("peft", "diffusers loads LoRAs through peft; install peft to run this reference")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.lora_base import fuse_text_encoder_lora

    s = 0.7
    for arch in ("sd15", "sdxl"):
        for fmt in ("kohya", "peft"):  # sdxl kohya = LDM/sgm names
            path = lora_path(models_dir, arch, fmt)
            theirs = X.tiny_base(arch)
            P = StableDiffusionPipeline if arch == "sd15" else StableDiffusionXLPipeline
            kw = {} if arch == "sd15" else {"unet_config": theirs.unet.config}
            sd, alphas, meta = P.lora_state_dict(path, return_lora_metadata=True, **kw)
            P.load_lora_into_unet(sd, alphas, theirs.unet, metadata=meta, adapter_name="a")
            theirs.unet.fuse_lora(lora_scale=s)
            for comp in ("text_encoder", "text_encoder_2"):
                if getattr(theirs, comp) is not None:
                    P.load_lora_into_text_encoder(sd, alphas, getattr(theirs, comp), prefix=comp, metadata=meta,
                                                  adapter_name="a")
                    fuse_text_encoder_lora(getattr(theirs, comp), lora_scale=s)
            want = run_outputs(theirs)
            got, _, _ = with_loras(X.tiny_base(arch), [ref(models_dir, arch, fmt, s, s)])
            assert_close(got, want)


def test_chaining_two_loras_sums_them_and_strength_zero_changes_nothing(pack, models_dir):
    base = X.tiny_base("sd15")
    a = X.tiny_lora_layers(base)
    b = X.tiny_lora_layers(base, seed=8, rank=2, alpha=1.0)
    b_ref = LoraRef(L.lora_spec(str(models_dir / "loras" / "tiny-sd15-lora-b.safetensors")), "sd15", -0.5, 0.25)
    got, _, _ = with_loras(X.tiny_base("sd15"), [ref(models_dir, "sd15", "kohya", 0.7, 1.3), b_ref])
    assert_close(got, run_outputs(hand_fused("sd15", [(a, 0.7, 1.3), (b, -0.5, 0.25)])))
    # strength 0: nothing is patched, outputs are bit-identical
    plain = run_outputs(X.tiny_base("sd15"))
    got, n_unet, n_text = with_loras(X.tiny_base("sd15"), [ref(models_dir, "sd15", "kohya", 0.0, 0.0)])
    assert (n_unet, n_text) == (0, 0)
    assert all(torch.equal(g, w) for g, w in zip(got, plain))
    # unet only: the text encoder is left alone
    got, n_unet, n_text = with_loras(X.tiny_base("sd15"), [ref(models_dir, "sd15", "kohya", 1.0, 0.0)])
    assert n_unet > 0 and n_text == 0 and torch.equal(got[1], plain[1]) and not torch.equal(got[0], plain[0])


def test_lora_on_then_off_leaves_the_cached_model_bit_identical(pack, models_dir):
    """The stack stays applied after its run (recorded) and a run without LoRAs gets the originals back:
    the same Parameter objects with bit-identical values, after a normal run and after one that raised."""
    from visionkit_pack.models.sd import lora_apply as A

    handle = X.base_pipeline_handle(models_dir, "sdxl")
    handle = handle.with_lora(ref(models_dir, "sdxl", "kohya", 1.0, 1.0)).with_lora(
        ref(models_dir, "sdxl", "b", 0.5, 0.5))
    plain_handle = X.base_pipeline_handle(models_dir, "sdxl")
    with use_components(handle) as comps:
        mods = comps.vk_modules()
        before = [{n: (p, p.detach().clone()) for n, p in m.named_parameters()} for m in mods]
        plain = run_outputs(comps)

        def check_restored():
            with RunPatches(*mods) as p:  # a run without LoRAs
                assert L.apply_lora_unet(p, comps, plain_handle) == 0
                assert L.apply_lora_text(p, comps, plain_handle) == 0
            assert all(A.applied(m) == A.ORIGINALS for m in mods)
            for m, saved in zip(mods, before):
                now = dict(m.named_parameters())
                assert now.keys() == saved.keys()
                for n, (obj, val) in saved.items():
                    assert now[n] is obj, n  # the very same Parameter objects
                    assert torch.equal(now[n], val), n
            assert all(torch.equal(a, b) for a, b in zip(run_outputs(comps), plain))
            assert A.backup_bytes(*mods) == {"ram": 0, "disk": 0}  # nothing held once nothing is patched

        with RunPatches(*mods) as p:
            assert L.apply_lora_unet(p, comps, handle) > 0
            assert L.apply_lora_text(p, comps, handle) > 0
            assert comps.unet.conv_in.weight is before[0]["conv_in.weight"][0]  # patched in place
            lora_out = run_outputs(comps)
            assert not torch.equal(lora_out[0], plain[0])
        assert all(A.applied(m) not in (A.ORIGINALS, None) for m in mods)  # kept, recorded
        assert all(torch.equal(a, b) for a, b in zip(run_outputs(comps), lora_out))
        check_restored()
        with pytest.raises(RuntimeError, match="boom"):
            with RunPatches(*mods) as p:
                L.apply_lora_unet(p, comps, handle)
                L.apply_lora_text(p, comps, handle)
                raise RuntimeError("boom")
        assert all(torch.equal(a, b) for a, b in zip(run_outputs(comps), lora_out))  # still the recorded stack
        check_restored()
    # the parsed LoRA is cached once, whichever run asks
    kinds = [e["kind"] for e in get_cache().entries()]
    assert kinds.count(L.KIND) == 2


# ------------------------------------------------------------------ the node
def test_loader_node_chains_and_checks_the_architecture(pack, models_dir):
    node = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]
    assert node.CATEGORY == "VisionKit/loaders" and node.RETURN_TYPES == ("VK_PIPELINE",)
    assert "tiny-sd15-lora-kohya.safetensors" in node.INPUT_TYPES()["required"]["lora_name"][0]
    assert node.VALIDATE_INPUTS("tiny-sd15-lora-kohya.safetensors") is True
    assert "was not found" in node.VALIDATE_INPUTS("nope.safetensors")
    # the strengths: ComfyUI's min/max at /prompt; NaN passes any min/max and is refused when the node runs
    with pytest.raises(ValueError, match="strength_clip must be a finite number"):
        node().load(None, "tiny-sd15-lora-kohya.safetensors", 1.0, float("nan"))
    assert node.IS_CHANGED("tiny-sd15-lora-kohya.safetensors") != "missing"
    sd15 = X.base_pipeline_handle(models_dir, "sd15")
    (p1,) = node().load(sd15, "tiny-sd15-lora-kohya.safetensors", 0.8, 0.6)
    (p2,) = node().load(p1, "tiny-sd15-lora-b.safetensors", 1.0, 0.0)
    assert sd15.loras == () and len(p1.loras) == 1
    assert [(r.name, r.strength_unet, r.strength_text, r.arch) for r in p2.loras] == [
        ("tiny-sd15-lora-kohya.safetensors", 0.8, 0.6, "sd15"), ("tiny-sd15-lora-b.safetensors", 1.0, 0.0, "sd15")]
    sdxl = X.base_pipeline_handle(models_dir, "sdxl")
    with pytest.raises(GenerationError, match="this LoRA is SD1.5, the pipeline is SDXL"):
        node().load(sdxl, "real-size-sd15-lora.safetensors")
    with pytest.raises(GenerationError, match="this LoRA is SDXL, the pipeline is SD1.5"):
        node().load(sd15, "tiny-sdxl-lora-kohya.safetensors")
    with pytest.raises(GenerationError, match="does not fit this pipeline"):
        node().load(sdxl, "tiny-sd15-lora-kohya.safetensors")  # tiny: the file cannot tell, the shapes can


def test_loader_node_on_the_tiny_pipeline_fixture(pack, models_dir):
    """The LoRA made for tests/vk_testing/tiny_sd.py's pipelines, through the real pipeline loader."""
    from visionkit_pack.models.sd import pipeline as sd_pipeline
    node = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]
    for arch in ("sd15", "sdxl"):
        handle = sd_pipeline.load_pipeline(str(models_dir / "diffusers" / f"tiny-{arch}"))
        (h,) = node().load(handle, f"for-tiny-{arch}.safetensors", 1.0, 1.0)
        with use_components(h) as comps:
            mods = [m for m in (comps.unet, comps.text_encoder, comps.text_encoder_2) if m is not None]
            w = comps.unet.conv_in.weight
            with RunPatches(*mods) as p:
                assert L.apply_lora_unet(p, comps, h) > 0 and L.apply_lora_text(p, comps, h) > 0
            assert comps.unet.conv_in.weight is w
