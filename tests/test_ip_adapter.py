"""IP-Adapter: equal to diffusers' own IP-Adapter path on the same tiny weights, seed and scheduler.

The pack loads models_root/ipadapter/* and clip_vision/* (tests/vk_testing/tiny_ipadapter.py); diffusers loads the
same weights from h94's repository layout (vk_extras/h94/models/ip-adapter_sd15.safetensors +
models/image_encoder/) with `pipe.load_ip_adapter(...)`, `set_ip_adapter_scale(...)`, and gets the reference image
as a PIL image, so its own CLIPImageProcessor, `encode_image` (zeros / hidden states of a zero image for the
negative half), image projection and IPAdapterAttnProcessor2_0 produce the reference. Both runs get VisionKit
Prompt Encode's embeddings (as in test_sd_sampler.py) and diffusers draws every random number from the same seed.
Reference images are 8-bit (what the node quantises to, as LoadImage images are).
"""
from __future__ import annotations

import pytest
import torch
from test_sd_sampler import (
    assert_close,
    assert_unet_unchanged,
    encode,
    handle,
    reference_pipe,
    run_reference,
    sample,
    test_image,
    unet_snapshot,
)
from vk_testing import import_pack
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture, for the T2 test)

import_pack()
from visionkit_pack.models.core import host
from visionkit_pack.models.sd import ip_adapter as IA
from visionkit_pack.models.sd import ip_adapter_run as IR
from visionkit_pack.models.core.cache import get_cache
from visionkit_pack.models.core.folders import ModelNotFoundError  # noqa: E402
from visionkit_pack.models.sd.clip_vision import config_from_state_dict
from visionkit_pack.models.sd.pipeline import use_pipeline
from visionkit_pack.models.sd.types import GenerationError
from visionkit_pack.nodes.ip_adapter import check_settings

LOADER, APPLY = "VisionKitIPAdapterLoader", "VisionKitIPAdapterApply"
ENC = "tiny-clip-vision.safetensors"


# ------------------------------------------------------------------ helpers
def ref_image(seed=3, h=48, w=40, b=1):
    """An 8-bit reference image (values k/255)."""
    return (test_image(seed=seed, h=h, w=w, b=b) * 255).round() / 255


def pil(img):
    from PIL import Image

    return Image.fromarray((img * 255).round().byte().numpy())


def load(pack, name, encoder=ENC):
    return pack.NODE_CLASS_MAPPINGS[LOADER]().load(name, encoder)[0]


def apply(pack, ipa, image, weight=1.0, start=0.0, end=1.0, mode="standard", combine="average", mask=None,
          control=None):
    node = pack.NODE_CLASS_MAPPINGS[APPLY]
    assert check_settings(start, end, weight, mode, combine) is True
    return node().apply(ipa, image, weight, start, end, mode, combine, attn_mask=mask, control=control)[0]


def diffusers_pipe(models_dir, arch, weight_names):
    cls, name, sub = (("StableDiffusionPipeline", "tiny-sd15", "models") if arch == "sd15" else
                      ("StableDiffusionXLPipeline", "tiny-sdxl", "sdxl_models"))
    pipe = reference_pipe(models_dir, cls, name)
    pipe.load_ip_adapter(str(models_dir / "vk_extras" / "h94"), subfolder=sub, weight_name=weight_names,
                         image_encoder_folder="image_encoder", local_files_only=True)
    return pipe


def processors(h):
    with use_pipeline(h) as comps:
        return dict(comps.unet.attn_processors)


def assert_processors_unchanged(h, before):
    after = processors(h)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)  # the very same processor objects are back


# ------------------------------------------------------------------ nodes
def test_nodes_are_registered_with_tooltips(pack, models_dir):
    m, d = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert d[LOADER] == "VisionKit Load IP-Adapter" and d[APPLY] == "VisionKit Apply IP-Adapter"
    loader, node = m[LOADER], m[APPLY]
    assert loader.CATEGORY == "VisionKit/loaders" and node.CATEGORY == "VisionKit/generation"
    assert loader.RETURN_TYPES == ("VK_IPADAPTER",) and node.RETURN_TYPES == ("VK_CONTROL",)
    for cls in (loader, node):
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        assert all("tooltip" in v[1] for v in inputs.values()), cls
        assert cls.DESCRIPTION and cls.OUTPUT_TOOLTIPS
    req = loader.INPUT_TYPES()["required"]
    assert "tiny-ip-adapter_sd15.safetensors" in req["ipadapter_name"][0]
    assert {ENC, "tiny-clip-vision-folder"} <= set(req["clip_vision_name"][0])
    assert set(node.INPUT_TYPES()["optional"]) == {"attn_mask", "control"}
    assert loader.VALIDATE_INPUTS("tiny-ip-adapter_sd15.safetensors") is True
    assert "missing.safetensors" in loader.VALIDATE_INPUTS("missing.safetensors")
    # clip_vision_name: ComfyUI's own list check at /prompt (VALIDATE_INPUTS names only the adapter, so a message
    # is not repeated on both inputs); load() gives the pack's message for a name that is not there
    with pytest.raises(ModelNotFoundError, match="'nope' was not found in the clip_vision folder"):
        loader().load("tiny-ip-adapter_sd15.safetensors", "nope")
    fp = loader.IS_CHANGED("tiny-ip-adapter_sd15.safetensors", ENC)
    assert fp == loader.IS_CHANGED("tiny-ip-adapter_sd15.safetensors", ENC) and "missing" not in fp
    assert fp != loader.IS_CHANGED("tiny-ip-adapter_sd15.safetensors", "tiny-clip-vision-folder")
    # no VALIDATE_INPUTS: ranges and lists are ComfyUI's at /prompt, start < end is checked when the node runs
    assert not hasattr(node, "VALIDATE_INPUTS")
    assert "start_percent" in check_settings(0.5, 0.5)
    assert "mode" in check_settings(mode="style")
    with pytest.raises(ValueError, match="set start_percent below end_percent"):
        node().apply(None, None, 1.0, 0.5, 0.5)  # before any input is used


# ------------------------------------------------------------------ loading and recognising
@pytest.mark.parametrize("name,kind,arch,tokens", [
    ("tiny-ip-adapter_sd15.safetensors", "base", "sd15", 4),
    ("tiny-ip-adapter_sd15.bin", "base", "sd15", 4),
    ("tiny-ip-adapter-plus_sd15.safetensors", "plus", "sd15", 8),
    ("tiny-ip-adapter-plus-face_sd15.safetensors", "plus-face", "sd15", 8),
    ("tiny-ip-adapter-full-face_sd15.safetensors", "full-face", "sd15", 17),  # 16 patches + CLS
    ("tiny-ip-adapter_sdxl.safetensors", "base", "sdxl", 4),
    ("tiny-ip-adapter-plus_sdxl.safetensors", "plus", "sdxl", 8),
])
def test_kind_arch_and_tokens_come_from_the_weights(pack, name, kind, arch, tokens):
    h = load(pack, name)
    assert (h.kind, h.arch, h.tokens) == (kind, arch, tokens)
    assert isinstance(h, IA.IPAdapterHandle) and hash(h)  # a small frozen handle


def test_bin_and_safetensors_and_encoder_file_and_folder_agree(pack, models_dir):
    from transformers import CLIPVisionModelWithProjection

    image = ref_image(b=2)
    outs = []
    folder = "tiny-clip-vision-folder"
    for name, enc in (("tiny-ip-adapter_sd15.safetensors", ENC), ("tiny-ip-adapter_sd15.bin", folder)):
        h = load(pack, name, enc)
        with get_cache().use(h.ipadapter) as model, get_cache().use(h.clip_vision) as encoder:
            outs.append(IR.image_tokens(model, encoder, image, "concatenate"))
            ref = CLIPVisionModelWithProjection.from_pretrained(str(models_dir / "clip_vision" / folder),
                                                                local_files_only=True).float().eval()
            x = torch.randn(2, 3, 32, 32)
            with torch.no_grad():
                assert torch.allclose(encoder(x).image_embeds, ref(x).image_embeds, atol=1e-5)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][0].shape == (1, 8, 16)  # two images × 4 tokens, 16 wide (tiny-sd15's cross-attention)


def test_single_file_config_rule_gives_h94s_vit_h_and_bigg_configs():
    # the published configs of h94/IP-Adapter's models/image_encoder (ViT-H/14: 16 heads of 80) and
    # sdxl_models/image_encoder (ViT-bigG/14: 16 heads of 104): not hidden / 64
    def shapes(hidden, layers, mlp, proj, patch=14, image=224):
        sd = {"vision_model.embeddings.class_embedding": torch.empty(hidden, device="meta"),
              "vision_model.embeddings.patch_embedding.weight": torch.empty(hidden, 3, patch, patch, device="meta"),
              "vision_model.embeddings.position_embedding.weight": torch.empty((image // patch) ** 2 + 1, hidden,
                                                                               device="meta"),
              "vision_model.encoder.layers.0.mlp.fc1.weight": torch.empty(mlp, hidden, device="meta"),
              "visual_projection.weight": torch.empty(proj, hidden, device="meta")}
        sd.update({f"vision_model.encoder.layers.{i}.layer_norm1.weight": torch.empty(hidden, device="meta")
                   for i in range(layers)})
        return config_from_state_dict(sd)

    vit_h = shapes(1280, 32, 5120, 1024)
    assert {k: vit_h[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                  "patch_size", "image_size", "projection_dim", "hidden_act")} == {
        "hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "intermediate_size": 5120,
        "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}
    big_g = shapes(1664, 48, 8192, 1280)
    assert (big_g["num_attention_heads"], big_g["projection_dim"], big_g["hidden_act"]) == (16, 1280, "gelu")
    vit_l = shapes(1024, 24, 4096, 768)  # OpenAI ViT-L/14
    assert (vit_l["num_attention_heads"], vit_l["hidden_act"]) == (16, "quick_gelu")


# ------------------------------------------------------------------ against diffusers
@pytest.mark.parametrize("name,weight,guidance,batch", [
    ("tiny-ip-adapter_sd15.safetensors", 0.8, 2.0, 2),  # CFG: zeros for the negative half; two images
    ("tiny-ip-adapter-plus_sd15.safetensors", 0.7, 2.0, 1),  # Resampler; a zero image's hidden states as negative
    ("tiny-ip-adapter-full-face_sd15.safetensors", 1.0, 1.0, 1),  # no negative pass
])
def test_sd15_equals_diffusers(pack, models_dir, name, weight, guidance, batch):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    image = ref_image()
    got = sample(pack, h, cond, control=apply(pack, load(pack, name), image, weight), guidance=guidance,
                 batch_size=batch)
    pipe = diffusers_pipe(models_dir, "sd15", name.removeprefix("tiny-"))
    pipe.set_ip_adapter_scale(weight)
    want = run_reference(pipe, cond, 1234, num_inference_steps=4, guidance_scale=guidance, height=64, width=64,
                         num_images_per_prompt=batch, ip_adapter_image=pil(image[0]))
    assert_close(got, want)
    assert (got - sample(pack, h, cond, guidance=guidance, batch_size=batch)).abs().max() > 1e-2  # it acts


def test_sdxl_and_style_only_equal_diffusers(pack, models_dir):
    h = handle(models_dir, "tiny-sdxl")
    cond = encode(pack, h)
    image = ref_image(seed=8)
    ipa = load(pack, "tiny-ip-adapter_sdxl.safetensors")
    pipe = diffusers_pipe(models_dir, "sdxl", "ip-adapter_sdxl.safetensors")
    results = {}
    # the tiny SDXL UNet's up block 0 has two attentions: InstantStyle's up_blocks.0.attentions.1 is the second
    for mode, scale in (("standard", 0.9), ("style only", {"up": {"block_0": [0.0, 0.9]}})):
        got = sample(pack, h, cond, control=apply(pack, ipa, image, 0.9, mode=mode), guidance=2.0, seed=9)
        pipe.set_ip_adapter_scale(scale)
        want = run_reference(pipe, cond, 9, num_inference_steps=4, guidance_scale=2.0, height=64, width=64,
                             ip_adapter_image=pil(image[0]))
        assert_close(got, want)
        results[mode] = got
    plain = sample(pack, h, cond, guidance=2.0, seed=9)
    assert (results["standard"] - results["style only"]).abs().max() > 1e-3
    assert (results["style only"] - plain).abs().max() > 1e-3


def _targets(unet, blocks):
    from visionkit_pack.models.sd.ip_attention import IPTerm, cross_attention_names

    term = IPTerm(weights={}, cond=torch.zeros(1, 1, 1), blocks=blocks)
    return {n for n in cross_attention_names(unet) if term.acts_on(n)}


def _diffusers_targets(unet, scale):
    """The cross-attention layers diffusers' set_ip_adapter_scale(scale) gives a non-zero scale (its own expansion)."""
    from diffusers.loaders.unet_loader_utils import _maybe_expand_lora_scales
    from visionkit_pack.models.sd.ip_attention import cross_attention_names

    (cfg,) = _maybe_expand_lora_scales(unet, [scale], default_scale=0.0)
    out = set()
    for name in cross_attention_names(unet):
        s = 0.0
        for k, v in cfg.items():  # set_ip_adapter_scale's rule: the last key the name starts with wins
            if name.startswith(k):
                s = v
        if s:
            out.add(name)
    return out


@pytest.mark.parametrize("arch,mode,scale", [
    ("sdxl", "style only", {"up": {"block_0": [0.0, 1.0, 0.0]}}),
    ("sdxl", "composition only", {"down": {"block_2": [0.0, 1.0]}}),
    ("sd15", "style only", {"up": {"block_1": 1.0}}),
    ("sd15", "composition only", {"down": {"block_2": 1.0}}),
])
def test_mode_blocks_on_the_real_unets_match_diffusers_scale_dicts(arch, mode, scale):
    import json

    from diffusers import UNet2DConditionModel
    from visionkit_pack.models.sd.convert import CONFIG_DIR

    with open(f"{CONFIG_DIR}/{arch}/unet/config.json") as f:
        cfg = json.load(f)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    got = _targets(unet, IR.target_blocks(mode, arch))
    assert got and got == _diffusers_targets(unet, scale)
    # SDXL: one attention of 10 transformer layers; SD1.5: all of up_blocks.1 (3) / down_blocks.2 (2)
    assert len(got) == {("sdxl", "style only"): 10, ("sdxl", "composition only"): 10, ("sd15", "style only"): 3,
                        ("sd15", "composition only"): 2}[(arch, mode)]


def test_attention_mask_equals_diffusers_mask_processor(pack, models_dir):
    from diffusers.image_processor import IPAdapterMaskProcessor

    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    image = ref_image(seed=4)
    mask = torch.zeros(1, 48, 64)
    mask[:, 8:40, 24:64] = 1.0  # the right part of a 64×48 image
    ipa = load(pack, "tiny-ip-adapter_sd15.safetensors")
    got = sample(pack, h, cond, control=apply(pack, ipa, image, 1.0, mask=mask), guidance=2.0, width=64, height=48)
    pipe = diffusers_pipe(models_dir, "sd15", "ip-adapter_sd15.safetensors")
    pipe.set_ip_adapter_scale(1.0)
    masks = IPAdapterMaskProcessor().preprocess(mask.unsqueeze(1), height=48, width=64)  # (1, 1, 48, 64)
    want = run_reference(pipe, cond, 1234, num_inference_steps=4, guidance_scale=2.0, height=48, width=64,
                         ip_adapter_image=pil(image[0]), cross_attention_kwargs={"ip_adapter_masks": [masks]})
    assert_close(got, want)
    unmasked = sample(pack, h, cond, control=apply(pack, ipa, image, 1.0), guidance=2.0, width=64, height=48)
    assert (got - unmasked).abs().max() > 1e-3
    with pytest.raises(GenerationError, match="batch of 3"):
        sample(pack, h, cond, control=apply(pack, ipa, image, mask=mask.repeat(3, 1, 1)), width=64, height=48,
               batch_size=2)


def test_two_adapters_equal_diffusers_multi_ip_adapter(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    im1, im2 = ref_image(seed=5), ref_image(seed=6, h=40, w=56)
    chain = apply(pack, load(pack, "tiny-ip-adapter_sd15.safetensors"), im1, 0.6)
    chain = apply(pack, load(pack, "tiny-ip-adapter-plus_sd15.safetensors"), im2, 0.9, control=chain)
    got = sample(pack, h, cond, control=chain, guidance=2.0)
    pipe = diffusers_pipe(models_dir, "sd15", ["ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"])
    pipe.set_ip_adapter_scale([0.6, 0.9])
    want = run_reference(pipe, cond, 1234, num_inference_steps=4, guidance_scale=2.0, height=64, width=64,
                         ip_adapter_image=[pil(im1[0]), pil(im2[0])])
    assert_close(got, want)


def test_several_reference_images_concatenate_and_average(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    images = torch.cat([ref_image(seed=5), ref_image(seed=7)])
    ipa = load(pack, "tiny-ip-adapter_sd15.safetensors")
    pipe = diffusers_pipe(models_dir, "sd15", "ip-adapter_sd15.safetensors")
    pipe.set_ip_adapter_scale(0.8)
    kw = dict(num_inference_steps=4, guidance_scale=2.0, height=64, width=64)
    # concatenate: diffusers' behaviour for a list of images given to one adapter
    got = sample(pack, h, cond, control=apply(pack, ipa, images, 0.8, combine="concatenate"), guidance=2.0)
    assert_close(got, run_reference(pipe, cond, 1234, ip_adapter_image=[[pil(images[0]), pil(images[1])]], **kw))
    # average: the mean of diffusers' own image embeddings, given to diffusers as precomputed embeddings
    with torch.no_grad():
        pixels = pipe.feature_extractor([pil(images[0]), pil(images[1])], return_tensors="pt").pixel_values
        mean = pipe.image_encoder(pixels).image_embeds.mean(0, keepdim=True)
    embeds = torch.stack([torch.zeros_like(mean), mean])  # (negative, positive) × 1 image × E
    got = sample(pack, h, cond, control=apply(pack, ipa, images, 0.8, combine="average"), guidance=2.0)
    assert_close(got, run_reference(pipe, cond, 1234, ip_adapter_image_embeds=[embeds], **kw))


@pytest.mark.parametrize("start,end", [(0.0, 0.5), (0.5, 1.0)])
def test_start_end_equal_diffusers_scale_switched_between_steps(pack, models_dir, start, end):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    image = ref_image()
    got = sample(pack, h, cond, control=apply(pack, load(pack, "tiny-ip-adapter_sd15.safetensors"), image, 0.8,
                                              start, end), guidance=2.0)
    pipe = diffusers_pipe(models_dir, "sd15", "ip-adapter_sd15.safetensors")
    pipe.set_ip_adapter_scale(0.8 if start == 0 else 0.0)

    def switch(p, i, t, kwargs):  # runs after step i: steps 2 and 3 get the other scale (4 steps, boundary 0.5)
        if i == 1:
            p.set_ip_adapter_scale(0.0 if start == 0 else 0.8)
        return kwargs

    want = run_reference(pipe, cond, 1234, num_inference_steps=4, guidance_scale=2.0, height=64, width=64,
                         ip_adapter_image=pil(image[0]), callback_on_step_end=switch)
    assert_close(got, want)


# ------------------------------------------------------------------ with the rest of the sampler; the cache
def test_with_controlnet_and_lora_in_one_run_and_the_cached_unet_is_unchanged(pack, models_dir):
    h = handle(models_dir, "tiny-sd15")
    (with_lora,) = pack.NODE_CLASS_MAPPINGS["VisionKitLoraLoader"]().load(h, "for-tiny-sd15.safetensors", 1.0, 1.0)
    cond = encode(pack, with_lora)
    (cn,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetLoader"]().load("for-tiny-sd15-ldm.safetensors")
    (chain,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetApply"]().apply(cn, test_image(seed=11), 1.0, 0.0, 1.0)
    snap, procs = unet_snapshot(h), processors(h)
    without = sample(pack, with_lora, cond, control=chain, guidance=2.0)
    chain = apply(pack, load(pack, "tiny-ip-adapter-plus_sd15.safetensors"), ref_image(), 0.8, control=chain)
    chain = apply(pack, load(pack, "tiny-ip-adapter_sd15.bin"), ref_image(seed=9), 0.5, 0.25, 0.75,
                  mode="style only", control=chain)
    got = sample(pack, with_lora, cond, control=chain, guidance=2.0)
    assert torch.isfinite(got).all() and (got - without).abs().max() > 1e-2
    assert_unet_unchanged(h, snap)
    assert_processors_unchanged(h, procs)
    assert torch.equal(sample(pack, with_lora, cond, control=chain, guidance=2.0), got)  # same again
    assert all(not e["in_use"] for e in get_cache().entries())


class Interrupted(Exception):
    pass


def test_cancel_mid_run_restores_the_unet(pack, models_dir, monkeypatch):
    h = handle(models_dir, "tiny-sd15")
    cond = encode(pack, h)
    chain = apply(pack, load(pack, "tiny-ip-adapter_sd15.safetensors"), ref_image(), 0.8)
    clean = sample(pack, h, cond, control=chain, guidance=2.0)
    snap, procs = unet_snapshot(h), processors(h)
    calls = []

    def cancel_on_third_step():
        calls.append(1)
        if len(calls) >= 3:
            raise Interrupted("cancelled")

    monkeypatch.setattr(host, "throw_if_cancelled", cancel_on_third_step)
    with pytest.raises(Interrupted):
        sample(pack, h, cond, control=chain, guidance=2.0)
    monkeypatch.undo()
    assert_unet_unchanged(h, snap)
    assert_processors_unchanged(h, procs)
    assert all(not e["in_use"] for e in get_cache().entries())
    assert torch.equal(sample(pack, h, cond, control=chain, guidance=2.0), clean)


# ------------------------------------------------------------------ clear messages
def test_wrong_files_say_what_they_are(pack, models_dir):
    ipa_dir, cv = models_dir / "ipadapter", str(models_dir / "clip_vision" / ENC)
    with pytest.raises(GenerationError, match="not an IP-Adapter: it looks like a LoRA"):
        IA.load_ipadapter(str(models_dir / "loras" / "for-tiny-sd15.safetensors"), cv)
    with pytest.raises(GenerationError, match="not an IP-Adapter: it looks like a (full )?Stable Diffusion checkpoint"):
        IA.load_ipadapter(str(models_dir / "checkpoints" / "tiny-sd15.safetensors"), cv)
    with pytest.raises(GenerationError, match="not an IP-Adapter: it looks like a CLIP vision encoder"):
        IA.load_ipadapter(cv, cv)
    with pytest.raises(GenerationError, match="is IP-Adapter weights, not a CLIP vision encoder"):
        IA.load_ipadapter(str(ipa_dir / "tiny-ip-adapter_sd15.safetensors"), str(ipa_dir / "tiny-ip-adapter_sd15.bin"))
    with pytest.raises(GenerationError, match="not a CLIP vision encoder.*LoRA"):
        IA.load_ipadapter(str(ipa_dir / "tiny-ip-adapter_sd15.safetensors"),
                          str(models_dir / "loras" / "for-tiny-sd15.safetensors"))
    with pytest.raises(GenerationError, match=r"expects 24-wide CLIP image embeddings.*96-wide hidden states, "
                                              r"40-wide image embeddings"):
        IA.load_ipadapter(str(ipa_dir / "tiny-ip-adapter_sd15.safetensors"),
                          str(models_dir / "clip_vision" / "tiny-clip-vision-wide.safetensors"))
    with pytest.raises(GenerationError, match="expects 64-wide CLIP hidden states"):
        IA.load_ipadapter(str(ipa_dir / "tiny-ip-adapter-plus_sd15.safetensors"),
                          str(models_dir / "clip_vision" / "tiny-clip-vision-wide.safetensors"))


def test_architecture_and_encoder_from_real_widths():
    from vk_testing.tiny_ipadapter import tiny_ipadapter

    def real(cross, enc_hidden=1664, kind="plus"):  # a few real-width layers, built on the meta device
        sd = tiny_ipadapter("sd15", kind, 1)
        proj = {k: torch.empty(v.shape, device="meta") for k, v in sd["image_proj"].items()}
        proj["proj_in.weight"] = torch.empty(32, enc_hidden, device="meta")
        proj["proj_out.weight"] = torch.empty(cross, 32, device="meta")
        proj["norm_out.weight"] = torch.empty(cross, device="meta")
        ip = {"1.to_k_ip.weight": torch.empty(640, cross, device="meta"),
              "1.to_v_ip.weight": torch.empty(640, cross, device="meta")}
        return proj, ip

    info = IA.inspect_ipadapter(*real(2048), name="adapter.safetensors")
    assert (info.arch, info.kind, info.encoder_width) == ("sdxl", "plus", 1664)
    assert IA._expected_encoder(info) == "ViT-bigG/14 hidden states (1664 wide)"
    assert IA.inspect_ipadapter(*real(768, 1280), name="adapter-xl.bin").arch == "sd15"  # widths beat the name
    with pytest.raises(GenerationError, match="Stable Diffusion 2.x"):
        IA.inspect_ipadapter(*real(1024), name="adapter.bin")
    proj, ip = real(768)
    faceid = {"proj.0.weight": proj["proj_in.weight"], "proj.2.weight": proj["proj_out.weight"],
              "norm.weight": proj["norm_out.weight"]}
    with pytest.raises(GenerationError, match="FaceID"):
        IA.inspect_ipadapter(faceid, ip, "ip-adapter-faceid_sd15.bin")


def test_mismatches_with_the_pipeline_are_explained(pack, models_dir):
    h15, hxl = handle(models_dir, "tiny-sd15"), handle(models_dir, "tiny-sdxl")
    xl = apply(pack, load(pack, "tiny-ip-adapter_sdxl.safetensors"), ref_image())
    with pytest.raises(GenerationError, match="this IP-Adapter is SDXL, the pipeline is SD1.5"):
        sample(pack, h15, encode(pack, h15), control=xl)
    with pytest.raises(GenerationError, match="IP-Adapter is SD1.5 but the control chain it is added to is for SDXL"):
        apply(pack, load(pack, "tiny-ip-adapter_sd15.safetensors"), ref_image(), control=xl)
    comp = apply(pack, load(pack, "tiny-ip-adapter_sd15.safetensors"), ref_image(), mode="composition only")
    with pytest.raises(GenerationError, match=r"none of the blocks \['down_blocks.2'\]"):
        sample(pack, h15, encode(pack, h15), control=comp)
    del hxl


# ------------------------------------------------------------------ a workflow, and inside ComfyUI
def test_api_workflow_loader_apply_sampler(pack, models_dir, tmp_path):
    from vk_testing.runner import WorkflowRunner

    pil(ref_image()[0]).save(tmp_path / "ref.png")
    prompt = {
        "1": {"class_type": "VisionKitPipelineLoader", "inputs": {"model_name": "checkpoints/tiny-sd15.safetensors",
                                                                  "dtype": "auto", "vae_name": "(from checkpoint)"}},
        "2": {"class_type": "VisionKitPromptEncode", "inputs": {"pipeline": ["1", 0], "positive": "a cat",
                                                                "negative": "", "stop_at_clip_layer": 0}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "4": {"class_type": LOADER, "inputs": {"ipadapter_name": "tiny-ip-adapter-plus_sd15.safetensors",
                                               "clip_vision_name": "tiny-clip-vision-folder"}},
        "5": {"class_type": APPLY, "inputs": {"ipadapter": ["4", 0], "image": ["3", 0], "weight": 0.7,
                                              "start_percent": 0.0, "end_percent": 1.0, "mode": "standard",
                                              "combine": "average"}},
        "6": {"class_type": "VisionKitLCMSampler", "inputs": {"pipeline": ["1", 0], "conditioning": ["2", 0],
                                                              "control": ["5", 0], "seed": 5, "steps": 4,
                                                              "guidance": 1.5, "scheduler": "lcm", "width": 64,
                                                              "height": 64, "batch_size": 1, "denoise": 1.0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "ipa"}},
    }
    (out,) = WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(prompt).saved["7"]
    h = handle(models_dir, "tiny-sd15")
    ipa = load(pack, "tiny-ip-adapter-plus_sd15.safetensors", "tiny-clip-vision-folder")
    direct = sample(pack, h, encode(pack, h, "a cat", ""), control=apply(pack, ipa, ref_image(), 0.7), seed=5,
                    guidance=1.5)
    assert torch.equal(out, direct)


@pytest.mark.t2
def test_t2_nodes_in_comfyui(comfy):  # noqa: F811
    info = comfy.get_json("/object_info")
    assert info[LOADER]["display_name"] == "VisionKit Load IP-Adapter"
    assert info[APPLY]["category"] == "VisionKit/generation" and info[APPLY]["output"] == ["VK_CONTROL"]
    assert info[LOADER]["input"]["required"]["clip_vision_name"][0]


def test_two_installs_on_one_unet_add_up_like_one_with_two_terms():
    """ip_attention's contract for IP-Adapter + InstantID in one run: separate installs stack on the same layers."""
    from visionkit_pack.models.sd.ip_attention import (
        IPTerm,
        describe_installed,
        install_ip_attention,
        ip_layers_from_state_dict,
    )
    from visionkit_pack.models.core.patching import RunPatches
    from vk_testing.tiny_ipadapter import tiny_ipadapter
    from vk_testing.tiny_sd import tiny_components

    unet = tiny_components("sd15")["unet"].float()
    g = torch.Generator().manual_seed(0)
    terms = []
    for seed, scale in ((1, 0.7), (2, 1.3)):
        w = {n: (k.float(), v.float()) for n, (k, v) in
             ip_layers_from_state_dict(unet, tiny_ipadapter("sd15", "base", seed)["ip_adapter"]).items()}
        terms.append(IPTerm(w, torch.randn(1, 4, 16, generator=g), torch.randn(1, 4, 16, generator=g), scale))
    x, ehs = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 7, 16, generator=g)
    before = dict(unet.attn_processors)

    def run(groups):
        with torch.no_grad(), RunPatches(unet) as patches:
            for group in groups:
                install_ip_attention(patches, unet, group, batch=2, cfg=True).set_step(0, 1, (8, 8))
            assert set(describe_installed(unet).values()) == {2}
            return unet(x, 10, ehs).sample

    one, two = run([terms]), run([terms[:1], terms[1:]])
    assert torch.equal(one, two)
    assert all(unet.attn_processors[k] is p for k, p in before.items()) and not describe_installed(unet)
    with torch.no_grad():
        assert (unet(x, 10, ehs).sample - one).abs().max() > 1e-3
