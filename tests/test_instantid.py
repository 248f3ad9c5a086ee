"""InstantID: the keypoint image, the adapter loader (Resampler against diffusers' own IP-Adapter Plus conversion),
the IdentityNet call (against diffusers' ControlNetModel with the image tokens as encoder_hidden_states, as
InstantID's pipeline calls it), whole runs of the VisionKit sampler against diffusers' SDXL ControlNet pipeline with
diffusers' own IP-Adapter loading (`unet._load_ip_adapter_weights`) and the IdentityNet fed the image tokens, the
per-run patches undone, the Apply node with the tiny InsightFace packs, and clear messages.

Fixtures: tests/vk_testing/tiny_instantid.py (instantid/tiny-instantid.bin / .safetensors in InstantX's layout,
controlnet/tiny-sdxl-identitynet/), the tiny SDXL pipeline of tiny_sd.py, the tiny face packs of tiny_faces.py.
"""
from __future__ import annotations

import functools
import math
import types
from contextlib import ExitStack

import numpy as np
import pytest
import torch
from vk_testing import import_pack
from vk_testing import tiny_instantid as TI
from vk_testing.tiny_faces import scene

import_pack()
from visionkit_pack.models.sd import instantid as I  # noqa: E402
from visionkit_pack.models.sd import instantid_run as IR  # noqa: E402
from visionkit_pack.models.sd import sampler as S  # noqa: E402
from visionkit_pack.models.sd.run_hooks import StepInputs  # noqa: E402
from visionkit_pack.models.core.cache import get_cache  # noqa: E402
from visionkit_pack.models.core.folders import ModelNotFoundError  # noqa: E402
from visionkit_pack.models.sd.instantid_keypoints import COLORS, KeypointsError, draw_keypoints, keypoints_image  # noqa: E402
from visionkit_pack.models.core.patching import RunPatches  # noqa: E402
from visionkit_pack.models.sd.pipeline import load_pipeline, use_pipeline  # noqa: E402
from visionkit_pack.models.sd.types import GenerationError  # noqa: E402

ADAPTER, IDNET = "tiny-instantid.bin", "tiny-sdxl-identitynet"
KPS = np.array([[22.0, 20.0], [58.0, 21.0], [40.0, 38.0], [26.0, 58.0], [55.0, 57.0]])  # eyes, nose, mouth (80×72)


# ------------------------------------------------------------------ helpers
def load(pack, adapter=ADAPTER, controlnet=IDNET):
    node = pack.NODE_CLASS_MAPPINGS["VisionKitInstantIDLoader"]
    assert node.VALIDATE_INPUTS(adapter) is True
    return node().load(adapter, controlnet)[0]


def embedding(seed=0, scale=20.0):
    return torch.randn(TI.embedding_dim(), generator=torch.Generator().manual_seed(seed)) * scale


def reference_resampler(models_dir, name=ADAPTER):
    """diffusers' own IP-Adapter Plus conversion of the file's image_proj (what load_ip_adapter does)."""
    from diffusers import UNet2DConditionModel

    sd = torch.load(str(models_dir / "instantid" / name), weights_only=True)
    return UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers(types.SimpleNamespace(), sd["image_proj"],
                                                                             low_cpu_mem_usage=False).eval()


def identitynet_reference(models_dir):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(str(models_dir / "controlnet" / IDNET), local_files_only=True).eval()


def prepare_image(image_bhwc, size, batch, cfg):
    """diffusers' StableDiffusionXLControlNetPipeline.prepare_image on the same tensor."""
    from diffusers import StableDiffusionXLControlNetPipeline
    from diffusers.image_processor import VaeImageProcessor

    ns = types.SimpleNamespace(control_image_processor=VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True,
                                                                         do_normalize=False))
    return StableDiffusionXLControlNetPipeline.prepare_image(
        ns, image=image_bhwc.permute(0, 3, 1, 2), width=size, height=size, batch_size=batch,
        num_images_per_prompt=batch, device="cpu", dtype=torch.float32, do_classifier_free_guidance=cfg)


def tiny_sdxl(models_dir):
    return load_pipeline(str(models_dir / "checkpoints" / "tiny-sdxl.safetensors"))


def encode(pack, h, positive="a portrait photo", negative="blurry"):
    return pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(h, positive, negative)[0]


def sample(pack, h, cond, control=None, **kw):
    args = {"seed": 77, "steps": 4, "guidance": 2.0, "scheduler": "lcm", "width": 64, "height": 64, "batch_size": 1,
            "denoise": 1.0}
    args.update(kw)
    return pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"]().sample(h, cond, control=control, **args)[0]


def module_state(module):
    """Parameters and buffers (objects and values) and attention processor types of a cached module."""
    procs = {n: type(p) for n, p in getattr(module, "attn_processors", {}).items()}
    tensors = {n: (t, t.detach().clone()) for n, t in list(module.named_parameters()) + list(module.named_buffers())}
    return tensors, procs


def assert_same_state(module, snap):
    from visionkit_pack.models.sd import lora_apply as sd_lora_apply

    sd_lora_apply.release(module)  # a LoRA stack a run left applied (kept for the next run) comes off exactly
    tensors, procs = snap
    now = dict(list(module.named_parameters()) + list(module.named_buffers()))
    assert set(now) == set(tensors)
    for n, (obj, value) in tensors.items():
        assert now[n] is obj and torch.equal(now[n], value), n
    assert {n: type(p) for n, p in getattr(module, "attn_processors", {}).items()} == procs


# ------------------------------------------------------------------ the keypoint image
def test_keypoint_image_colours_at_the_points_and_along_the_limbs():
    h, w = 72, 80
    img = draw_keypoints(KPS, w, h)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    for (x, y), colour in zip(KPS, COLORS):  # every point: a full-colour disc of radius 10
        assert tuple(img[int(y), int(x)]) == colour
        assert tuple(img[int(y) + 9, int(x)]) == colour or int(y) + 9 >= h
    nose = KPS[2]
    for outer in (0, 1, 3, 4):  # the limb to the nose: 60 % of the outer point's colour, 4 px half-width
        (x0, y0), (x1, y1) = KPS[outer], nose
        mx, my = int((x0 + x1) / 2), int((y0 + y1) / 2)
        dim = tuple(int(c * 0.6) for c in COLORS[outer])
        assert tuple(img[my, mx]) == dim, outer
        ux, uy = -(y0 - y1), x0 - x1  # across the limb
        n = math.hypot(ux, uy)
        near = (round(mx + 2 * ux / n), round(my + 2 * uy / n))
        far = (round(mx + 7 * ux / n), round(my + 7 * uy / n))
        assert tuple(img[near[1], near[0]]) == dim
        assert tuple(img[far[1], far[0]]) == (0, 0, 0)
    assert tuple(img[0, 0]) == (0, 0, 0) and tuple(img[h - 1, w - 1]) == (0, 0, 0)
    as_image = keypoints_image(KPS, w, h)
    assert as_image.shape == (1, h, w, 3) and as_image.dtype == torch.float32
    assert torch.equal((as_image[0] * 255).round().to(torch.uint8), torch.from_numpy(img))


def test_keypoints_outside_the_image_do_not_crash():
    inside = draw_keypoints(KPS, 80, 72)
    far = KPS.copy()
    far[0] = (-500.0, -300.0)  # left eye far off the top-left: its limb still crosses the image
    far[4] = (1e12, 5e11)  # absurdly far: clamped
    img = draw_keypoints(far, 80, 72)
    assert tuple(img[38, 40]) == COLORS[2]  # the nose is still there
    assert not np.array_equal(img, inside)
    off = draw_keypoints(KPS + 1000.0, 80, 72)  # the whole face outside: a black image
    assert off.max() == 0
    with_nan = KPS.copy()
    with_nan[3] = (np.nan, np.inf)
    img = draw_keypoints(with_nan, 80, 72)
    assert tuple(img[58, 26]) == (0, 0, 0) and tuple(img[20, 22]) == COLORS[0]
    with pytest.raises(KeypointsError, match=r"\(5, 2\)"):
        draw_keypoints(np.zeros((68, 2)), 80, 72)
    with pytest.raises(KeypointsError, match="at least 1×1"):
        draw_keypoints(KPS, 0, 10)


# ------------------------------------------------------------------ the adapter file
def test_resampler_equals_diffusers_ip_adapter_plus_conversion(pack, models_dir):
    handle = load(pack)
    s = handle.shape
    assert (s.dim, s.depth, s.heads, s.dim_head, s.num_queries, s.output_dim, s.ff_mult) == (64, 4, 2, 64, 4, 40, 4.0)
    assert s.embedding_dim == TI.embedding_dim() and handle.arch == "sdxl" and handle.controlnet.arch == "sdxl"
    ref = reference_resampler(models_dir)
    x = torch.stack([torch.zeros(s.embedding_dim), embedding(1), embedding(2)]).unsqueeze(1)
    with torch.no_grad():
        want = ref(x)
    with get_cache().use(handle.adapter) as adapter:
        got = adapter.resampler(x)
        cond, uncond = IR.face_tokens(adapter, embedding(1))
        file_ip = torch.load(str(models_dir / "instantid" / ADAPTER), weights_only=True)["ip_adapter"]
        assert sorted(adapter.ip_state_dict()) == sorted(file_ip)
        assert all(torch.equal(adapter.ip_state_dict()[k], v) for k, v in file_ip.items())
    assert got.shape == (3, 4, 40) and (got - want).abs().max() < 1e-5 and want.std() > 0.1
    assert torch.allclose(cond[0], want[1], atol=1e-5) and torch.allclose(uncond[0], want[0], atol=1e-5)
    # the .safetensors conversion ("image_proj." / "ip_adapter." prefixes) is the same adapter
    other = load(pack, "tiny-instantid.safetensors")
    with get_cache().use(other.adapter) as adapter:
        assert torch.allclose(adapter.resampler(x), want, atol=1e-5)


def test_depth_and_heads_are_read_from_the_weights(tmp_path, monkeypatch):
    """A 2-layer, 1-head Resampler: depth from the layer count, heads = attention width / 64 (as diffusers)."""
    import diffusers.loaders.unet as dl
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    sd = TI.adapter_state_dict(depth=2, heads=1, queries=3, ff_mult=2, seed=5)
    path = tmp_path / "depth2.bin"
    TI.save_adapter(sd, path)
    proj, _ = I.read_adapter(str(path))
    shape = I.resampler_shape(proj)
    assert (shape.depth, shape.heads, shape.num_queries, shape.ff_mult) == (2, 1, 3, 2.0)
    ours = I.build_resampler(proj, shape)
    monkeypatch.setattr(dl, "IPAdapterPlusImageProjection",
                        functools.partial(IPAdapterPlusImageProjection, depth=2, ffn_ratio=2))
    ref = dl.UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(types.SimpleNamespace(),
                                                                                      sd["image_proj"],
                                                                                      low_cpu_mem_usage=False)
    x = embedding(3).reshape(1, 1, -1)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() < 1e-5


def test_wrong_files_are_refused_with_the_reason(pack, models_dir, tmp_path):
    from safetensors.torch import save_file

    sd = TI.adapter_state_dict()
    sd15 = {"image_proj": {**sd["image_proj"], "proj_out.weight": torch.zeros(768, 64),
                           "proj_out.bias": torch.zeros(768), "norm_out.weight": torch.ones(768),
                           "norm_out.bias": torch.zeros(768)},
            "ip_adapter": sd["ip_adapter"]}
    TI.save_adapter(sd15, tmp_path / "sd15.bin")
    plus = {"image_proj": TI.resampler_weights(1280, 40, depth=1, heads=1), "ip_adapter": sd["ip_adapter"]}
    TI.save_adapter(plus, tmp_path / "plus.bin")
    TI.save_adapter({"image_proj": {"proj.weight": torch.zeros(8, 4), "norm.weight": torch.ones(8)},
                     "ip_adapter": sd["ip_adapter"]}, tmp_path / "ipadapter.bin")
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(1)}, str(tmp_path / "cn.safetensors"))
    (tmp_path / "empty.bin").write_bytes(b"")
    cases = [("sd15.bin", "made for SD1.5.*SDXL only"), ("plus.bin", "IP-Adapter Plus, not InstantID"),
             ("ipadapter.bin", "is an IP-Adapter"), ("cn.safetensors", "is a ControlNet"),
             ("empty.bin", "empty \\(zero-byte\\) file")]
    for name, msg in cases:
        with pytest.raises(I.InstantIDError, match=msg):
            I.load_instantid(str(tmp_path / name), str(models_dir / "controlnet" / IDNET))
    adapter = str(models_dir / "instantid" / ADAPTER)
    with pytest.raises(I.InstantIDError, match="SD1.5 ControlNet; InstantID is SDXL only"):
        I.load_instantid(adapter, str(models_dir / "controlnet" / "tiny-sd15-controlnet"))
    with pytest.raises(I.InstantIDError, match="64-wide tokens .* 40-wide ones: this ControlNet is not"):
        I.load_instantid(adapter, str(models_dir / "controlnet" / "tiny-sdxl-controlnet"))  # the other tiny SDXL


# ------------------------------------------------------------------ the run hook against diffusers
def test_identitynet_gets_the_image_tokens_like_instantids_pipeline(pack, models_dir):
    from visionkit_pack.models.sd.ip_attention import describe_installed

    handle = load(pack)
    kps = keypoints_image(KPS, 80, 72)
    emb = embedding(4)
    chain = I.make_entry(handle, emb, kps, ip_weight=0.7, controlnet_strength=0.9)
    h = tiny_sdxl(models_dir)
    g = torch.Generator().manual_seed(0)
    batch = 2
    lmi = torch.cat([torch.randn(batch, 4, 8, 8, generator=g)] * 2)
    ehs = torch.randn(2 * batch, 7, 40, generator=g)
    added = {"text_embeds": torch.randn(2 * batch, 20, generator=g),
             "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * (2 * batch))}
    with use_pipeline(h) as comps:
        unet = comps.unet
        before = module_state(unet)
        run = types.SimpleNamespace(comps=comps, cfg=True, batch=batch, device=torch.device("cpu"),
                                    dtype=next(unet.parameters()).dtype)
        (hook,) = S.build_hooks(chain)
        assert isinstance(hook, IR.InstantIDHook)
        with torch.inference_mode(), RunPatches(unet) as patches, ExitStack() as stack:
            hook.enter(run, patches, stack)
            installed = describe_installed(unet)
            kw = hook.unet_kwargs(StepInputs(lmi, torch.tensor(500), ehs, added, 1, 4))
        assert_same_state(unet, before)
        assert describe_installed(unet) == {}
    assert len(installed) == len(TI.adapter_state_dict()["ip_adapter"]) // 2 and set(installed.values()) == {1}
    # InstantID's pipeline: prompt_image_emb = resampler([zeros, emb]) repeated per image, [uncond × B, cond × B];
    # controlnet(latents, t, encoder_hidden_states=prompt_image_emb, controlnet_cond=kps image, ...)
    with torch.no_grad():
        tokens = reference_resampler(models_dir)(torch.stack([torch.zeros_like(emb), emb]).unsqueeze(1))
        tokens = tokens.repeat(1, batch, 1).view(2 * batch, tokens.shape[1], -1)
        want = identitynet_reference(models_dir)(lmi, torch.tensor(500), encoder_hidden_states=tokens,
                                                 controlnet_cond=prepare_image(kps, 64, batch, True),
                                                 conditioning_scale=0.9, added_cond_kwargs=added, return_dict=False)
    got = (kw["down_block_additional_residuals"], kw["mid_block_additional_residual"])
    for a, b in zip(list(got[0]) + [got[1]], list(want[0]) + [want[1]]):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-4
    assert max(float(r.abs().max()) for r in want[0]) > 1e-2


def reference_instantid_pipe(models_dir, emb):
    """diffusers' SDXL ControlNet pipeline turned into InstantID's: the adapter loaded by diffusers' own IP-Adapter
    loading (`unet._load_ip_adapter_weights`: Resampler + IPAdapterAttnProcessor2_0), and the IdentityNet fed the
    image tokens instead of the prompt (InstantID's `controlnet(..., encoder_hidden_states=prompt_image_emb)` with
    prompt_image_emb = resampler([zeros, emb]) under CFG, resampler([emb]) without, repeated per image)."""
    from test_sd_sampler import reference_pipe

    cn = identitynet_reference(models_dir)
    pipe = reference_pipe(models_dir, "StableDiffusionXLControlNetPipeline", "tiny-sdxl", controlnet=cn)
    sd = torch.load(str(models_dir / "instantid" / ADAPTER), weights_only=True)
    pipe.unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    embeds = torch.stack([torch.zeros_like(emb), emb]).reshape(2, 1, 1, -1)  # [negative, positive] for CFG
    with torch.no_grad():
        tokens = pipe.unet.encoder_hid_proj([embeds])[0].flatten(1, 2)  # resampler([zeros, emb]): (2, tokens, 40)
    forward = cn.forward
    state = {"cfg": True}

    def identitynet(sample, *args, **kw):
        t = tokens if state["cfg"] else tokens[1:]
        n = sample.shape[0] // t.shape[0]  # images per prompt
        kw["encoder_hidden_states"] = t.repeat(1, n, 1).view(n * t.shape[0], t.shape[1], -1)
        return forward(sample, *args, **kw)

    cn.forward = identitynet
    return pipe, embeds, state


def test_sampler_run_equals_diffusers_with_instantids_wiring(pack, models_dir):
    from test_sd_sampler import run_reference

    handle = load(pack)
    emb = embedding(6)
    kps = keypoints_image(KPS, 80, 72)
    h = tiny_sdxl(models_dir)
    cond = encode(pack, h)
    pipe, embeds, state = reference_instantid_pipe(models_dir, emb)
    cases = ((0.8, 1.2, 0.0, 1.0, 2.0, 1), (1.5, 0.6, 0.25, 0.75, 2.0, 2), (0.8, 1.0, 0.0, 1.0, 1.0, 1))
    for weight, strength, start, end, guidance, batch in cases:
        chain = I.make_entry(handle, emb, kps, weight, strength, start, end)
        got = sample(pack, h, cond, chain, guidance=guidance, batch_size=batch)

        def ip_window(p, i, t, kw, n=4, weight=weight, start=start, end=end):  # diffusers: one IP scale per call;
            p.set_ip_adapter_scale(weight if start <= (i + 1) / n < end else 0.0)  # set the next step's here
            return kw

        pipe.set_ip_adapter_scale(weight if start == 0 else 0.0)
        state["cfg"] = guidance > 1
        want = run_reference(pipe, cond, 77, image=kps.permute(0, 3, 1, 2), num_inference_steps=4,
                             guidance_scale=guidance, num_images_per_prompt=batch, height=64, width=64,
                             controlnet_conditioning_scale=strength, control_guidance_start=start,
                             control_guidance_end=end, ip_adapter_image_embeds=[embeds if guidance > 1 else embeds[1:]],
                             callback_on_step_end=ip_window)
        assert got.shape == want.shape == (batch, 64, 64, 3)
        err = (got - want).abs().max().item()
        assert err < 1e-4, (err, guidance, batch)
        plain = sample(pack, h, cond, guidance=guidance, batch_size=batch)
        assert (got - plain).abs().max() > 1e-2  # InstantID changed the image


def test_chain_with_lora_and_controlnet_runs_and_leaves_the_cached_models_as_they_were(pack, models_dir):
    nodes = pack.NODE_CLASS_MAPPINGS
    h = tiny_sdxl(models_dir)
    (lora_h,) = nodes["VisionKitLoraLoader"]().load(h, "for-tiny-sdxl.safetensors", 1.0, 0.0)
    cond = encode(pack, lora_h)
    handle = load(pack)
    (cn,) = nodes["VisionKitControlNetLoader"]().load("for-tiny-sdxl.safetensors")
    (chain,) = nodes["VisionKitControlNetApply"]().apply(cn, torch.rand(1, 64, 64, 3), 0.7, 0.0, 1.0)
    chain = I.make_entry(handle, embedding(7), keypoints_image(KPS, 64, 64), 0.9, 0.8, 0.0, 0.75, chain)
    assert [e.kind for e in chain] == ["controlnet", "instantid"]
    with use_pipeline(lora_h) as comps, get_cache().use(handle.controlnet.spec) as idnet, \
            get_cache().use(cn.spec) as other, get_cache().use(handle.adapter) as adapter:
        snaps = [(m, module_state(m)) for m in (comps.unet, idnet, other, adapter.resampler, adapter.ip)]
    without = sample(pack, lora_h, cond, chain[:1], guidance=1.0)
    got = sample(pack, lora_h, cond, chain, guidance=1.0)
    assert got.shape == (1, 64, 64, 3) and torch.isfinite(got).all()
    assert (got - without).abs().max() > 1e-2
    for module, snap in snaps:
        assert_same_state(module, snap)
    assert all(not e["in_use"] for e in get_cache().entries())
    assert torch.equal(sample(pack, lora_h, cond, chain[:1], guidance=1.0), without)  # nothing stayed behind
    assert torch.equal(sample(pack, lora_h, cond, chain, guidance=1.0), got)


# ------------------------------------------------------------------ Apply InstantID with the tiny face packs
def face_scene(seed, h=120, w=160):
    """RGB IMAGE (1, h, w, 3) of tiny_faces.scene: "faces" for the tiny detector (the same pixels in RGB order
    as the BGR scene; the detector reads colours, so the face boxes are those of that scene's squares)."""
    return torch.from_numpy(scene(seed, h, w).copy()).float().div(255).unsqueeze(0)


def insightface_reference(models_dir, image, pack="tiny_antelope", det_size=160):
    """InstantID's reference code: app.get(BGR), sorted by box area, the last (largest) face."""
    import warnings

    from insightface.app import FaceAnalysis

    fa = FaceAnalysis(name=pack, root=str(models_dir / "insightface"), providers=["CPUExecutionProvider"],
                      allowed_modules=["detection", "recognition"])
    fa.prepare(ctx_id=-1, det_size=(det_size, det_size))
    out = []
    for img in image:
        bgr = np.ascontiguousarray((img.numpy() * 255).round().astype(np.uint8)[..., ::-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            faces = fa.get(bgr)
        out.append(sorted(faces, key=lambda x: (x["bbox"][2] - x["bbox"][0]) * (x["bbox"][3] - x["bbox"][1]))[-1])
    return out


def face_model(pack, name="tiny_antelope"):
    return pack.NODE_CLASS_MAPPINGS["VisionKitFaceAnalysisLoader"]().load(name, "CPU", 160, 0.5)[0]


def apply_node(pack, *args, **kw):
    node = pack.NODE_CLASS_MAPPINGS["VisionKitInstantIDApply"]
    return node().apply(*args, **kw)


def test_apply_averages_the_largest_faces_and_draws_their_keypoints(pack, models_dir):
    handle = load(pack)
    faces = torch.cat([face_scene(1), face_scene(2)])
    pose = face_scene(3, 96, 128)
    fm = face_model(pack)
    chain, kps = apply_node(pack, handle, fm, faces, 0.6, 0.9, 0.1, 0.9)
    (e,) = chain
    assert e.kind == "instantid" and e.model is handle and e.arch == "sdxl"
    assert (e.strength, e.start, e.end, e.option("ip_weight")) == (0.9, 0.1, 0.9, 0.6)
    refs = insightface_reference(models_dir, faces)
    want = np.mean([r["embedding"] for r in refs], axis=0)  # several references: the average embedding
    assert np.abs(e.option("embedding").numpy() - want).max() < 1e-4 * np.abs(want).max()
    assert kps.shape == (1, 120, 160, 3) and torch.equal(e.image, kps)
    assert torch.equal(kps, keypoints_image(refs[0]["kps"], 160, 120))  # the first reference's largest face
    assert kps.max() == 1.0
    # a pose image: its largest face's keypoints, at its size; appended to an existing chain
    chain2, kps2 = apply_node(pack, handle, fm, faces[:1], 0.8, 0.8, 0.0, 1.0, pose_image=pose, control=chain)
    assert len(chain2) == 2 and chain2[0] is e
    (pose_ref,) = insightface_reference(models_dir, pose)
    assert kps2.shape == (1, 96, 128, 3) and torch.equal(kps2, keypoints_image(pose_ref["kps"], 128, 96))
    one = refs[0]["embedding"]
    assert np.abs(chain2[1].option("embedding").numpy() - one).max() < 1e-4 * np.abs(one).max()


def test_no_face_and_unusable_face_models_say_which_image(pack, models_dir):
    handle = load(pack)
    fm = face_model(pack)
    black = torch.zeros(1, 120, 160, 3)
    with pytest.raises(GenerationError, match=r"no face was found in face image 2 of 2 \(batch index 1\)"):
        apply_node(pack, handle, fm, torch.cat([face_scene(1), black]))
    with pytest.raises(GenerationError, match="no face was found in the pose image"):
        apply_node(pack, handle, fm, face_scene(1), pose_image=black)
    with pytest.raises(GenerationError, match="no face was found in the face image"):
        apply_node(pack, handle, fm, black)
    with pytest.raises(GenerationError, match="no face embedding.*ArcFace"):
        apply_node(pack, handle, face_model(pack, "tiny_detonly"), face_scene(1))
    with pytest.raises(GenerationError, match=r"gives 7-d embeddings but this InstantID adapter expects"):
        I.make_entry(handle, torch.ones(7), keypoints_image(KPS, 80, 72), 1.0, 1.0)
    with pytest.raises(ValueError, match="must be below end_percent"):
        apply_node(pack, handle, fm, face_scene(1), 0.8, 0.8, 0.5, 0.5)
    with pytest.raises(GenerationError, match="is SDXL but the control chain|this InstantID is SDXL"):
        sd15_cn = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetLoader"]().load("tiny-sd15-controlnet")[0]
        (sd15_chain,) = pack.NODE_CLASS_MAPPINGS["VisionKitControlNetApply"]().apply(sd15_cn, black)
        apply_node(pack, handle, fm, face_scene(1), control=sd15_chain)
    with pytest.raises(GenerationError, match="this InstantID is SDXL, the pipeline is SD1.5"):
        h15 = load_pipeline(str(models_dir / "checkpoints" / "tiny-sd15.safetensors"))
        chain, _ = apply_node(pack, handle, fm, face_scene(1))
        sample(pack, h15, encode(pack, h15), chain)
    h = tiny_sdxl(models_dir)
    two_poses, _ = apply_node(pack, handle, fm, face_scene(1), pose_image=torch.cat([face_scene(3), face_scene(4)]))
    with pytest.raises(GenerationError, match="2 keypoint images .* but 3 images are generated"):
        sample(pack, h, encode(pack, h), two_poses, batch_size=3)
    assert all(not e["in_use"] for e in get_cache().entries())


def test_nodes_are_registered_with_tooltips_and_checks(pack, models_dir):
    n, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    loader, apply = n["VisionKitInstantIDLoader"], n["VisionKitInstantIDApply"]
    assert names["VisionKitInstantIDLoader"] == "VisionKit Load InstantID"
    assert names["VisionKitInstantIDApply"] == "VisionKit Apply InstantID"
    assert loader.CATEGORY == "VisionKit/loaders" and apply.CATEGORY == "VisionKit/generation"
    assert loader.RETURN_TYPES == ("VK_INSTANTID",) and apply.RETURN_TYPES == ("VK_CONTROL", "IMAGE")
    for node in (loader, apply):
        spec = node.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        assert all(v[1].get("tooltip") for v in inputs.values()), node
        assert node.DESCRIPTION and len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES)
    spec = apply.INPUT_TYPES()
    assert spec["required"]["face_model"][0] == "VK_FACE_MODEL" and spec["required"]["instantid"][0] == "VK_INSTANTID"
    assert set(spec["optional"]) == {"pose_image", "control"}
    lists = loader.INPUT_TYPES()["required"]
    assert {"tiny-instantid.bin", "tiny-instantid.safetensors"} <= set(lists["instantid_name"][0])
    assert IDNET in lists["controlnet_name"][0]
    assert "was not found" in loader.VALIDATE_INPUTS("ip-adapter.bin")
    # controlnet_name: ComfyUI's own list check at /prompt (VALIDATE_INPUTS names only the adapter, so a message
    # is not repeated on both inputs); load() gives the pack's message for a name that is not there
    with pytest.raises(ModelNotFoundError, match="'ControlNetModel' was not found in the controlnet folder"):
        loader().load(ADAPTER, "ControlNetModel")
    first = loader.IS_CHANGED(ADAPTER, IDNET)
    assert "missing" not in first and first != loader.IS_CHANGED("tiny-instantid.safetensors", IDNET)
    # no VALIDATE_INPUTS: the ranges are ComfyUI's min/max at /prompt, start < end is checked when the node runs
    assert not hasattr(apply, "VALIDATE_INPUTS")
    from visionkit_pack.nodes.instantid import check_settings

    assert check_settings(0.0, 1.0, 0.8, 0.8) is True
    assert "must be below" in check_settings(0.7, 0.2)
    assert "ip_weight" in check_settings(0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="set start_percent below end_percent"):
        apply().apply(None, None, None, 0.8, 0.8, 0.7, 0.2)  # before any input is used


def test_api_workflow_face_loader_instantid_sampler(pack, models_dir, tmp_path):
    from PIL import Image
    from vk_testing.runner import WorkflowRunner

    Image.fromarray((face_scene(1)[0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / "face.png")
    prompt = {
        "1": {"class_type": "VisionKitPipelineLoader", "inputs": {"model_name": "checkpoints/tiny-sdxl.safetensors",
                                                                  "dtype": "auto", "vae_name": "(from checkpoint)"}},
        "2": {"class_type": "VisionKitPromptEncode", "inputs": {"pipeline": ["1", 0], "positive": "a portrait photo",
                                                                "negative": "blurry", "stop_at_clip_layer": 0}},
        "3": {"class_type": "VisionKitInstantIDLoader", "inputs": {"instantid_name": ADAPTER,
                                                                   "controlnet_name": IDNET}},
        "4": {"class_type": "VisionKitFaceAnalysisLoader", "inputs": {"pack_name": "tiny_antelope", "provider": "CPU",
                                                                      "det_size": 160, "det_thresh": 0.5}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "6": {"class_type": "VisionKitInstantIDApply", "inputs": {"instantid": ["3", 0], "face_model": ["4", 0],
                                                                  "face_image": ["5", 0], "ip_weight": 0.8,
                                                                  "controlnet_strength": 0.8, "start_percent": 0.0,
                                                                  "end_percent": 1.0}},
        "7": {"class_type": "VisionKitLCMSampler", "inputs": {"pipeline": ["1", 0], "conditioning": ["2", 0],
                                                              "control": ["6", 0], "seed": 5, "steps": 2,
                                                              "guidance": 1.5, "scheduler": "lcm", "width": 64,
                                                              "height": 64, "batch_size": 1, "denoise": 1.0}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "instantid"}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["6", 1]}},
    }
    res = WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(prompt)
    (out,) = res.saved["8"]
    (kps,) = res.previews["9"]
    assert out.shape == (1, 64, 64, 3) and kps.shape == (1, 120, 160, 3) and kps.max() == 1.0
