"""Real-ESRGAN: loader arch detection, the tiled upscale engine (seamless, batched, alpha, outscale,
progress, cancel) compared with RealESRGANer on the same tiny weights, and the VisionKitUpscale node."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import import_pack, tiny_models

import_pack()
from visionkit_pack.models import host, imageops
from visionkit_pack.models import upscale as U

# fixture file -> (arch, scale, blocks/convs, features) as tiny_models builds them
FIXTURES = {
    "tiny_RealESRGAN_x4plus.pth": ("RRDBNet", 4, 2, 8),
    "tiny_RealESRGAN_x2plus.pth": ("RRDBNet", 2, 2, 8),
    "tiny_realesr-general-x4v3.safetensors": ("SRVGGNetCompact", 4, 3, 8),
    "nested/tiny_srvgg_x2.pth": ("SRVGGNetCompact", 2, 3, 8),
}
TOL_SEAM = 2 / 255
TOL_PARITY = 1 / 255


def fixture_path(models_dir, name):
    return str(models_dir / "upscale_models" / name)


@pytest.fixture(scope="module")
def RealESRGANer():
    from visionkit_pack.models.compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from realesrgan import RealESRGANer

    return RealESRGANer


def test_image(h, w, c=3, b=1, seed=0):
    """A smooth-ish random image that survives uint8 round trips (values on the 1/255 grid)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return (x.permute(0, 2, 3, 1) * 255).round().div(255).contiguous()


test_image.__test__ = False  # a helper, not a test


def plain_forward(net, image):
    with torch.no_grad():
        return net(image.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)


def reference(RealESRGANer, net_file, sd, tmp_path, rgb_or_rgba, **kw):
    """RealESRGANer.enhance on the same weights, loaded from a file by RealESRGANer itself."""
    ref_path = tmp_path / "ref_weights.pth"
    torch.save({"params": sd}, ref_path)  # RealESRGANer wants params / params_ema in a .pth
    arch = U.detect_arch(sd)
    model = U.build_network(arch)
    up = RealESRGANer(scale=arch.scale, model_path=str(ref_path), model=model, tile=kw.pop("tile"),
                      tile_pad=kw.pop("tile_pad"), pre_pad=kw.pop("pre_pad", 0), half=False, device="cpu")
    a = imageops.to_uint8(rgb_or_rgba[0])
    bgr = np.ascontiguousarray(a[..., [2, 1, 0, 3]] if a.shape[-1] == 4 else a[..., ::-1])
    out, _mode = up.enhance(bgr, **kw)
    rgb = out[..., [2, 1, 0, 3]] if out.shape[-1] == 4 else out[..., ::-1]
    return imageops.from_uint8(np.ascontiguousarray(rgb))[None]


# ---------------------------------------------------------------- loader and architecture detection
def test_loader_detects_every_fixture(pack, models_dir):
    from visionkit_pack.models.cache import get_cache
    from visionkit_pack.nodes.upscale import VisionKitUpscaleModelLoader

    for name, (arch, scale, blocks, feat) in FIXTURES.items():
        sd = U.load_state_dict(fixture_path(models_dir, name))
        a = U.detect_arch(sd, name)
        assert (a.arch, a.scale, a.num_block, a.num_feat) == (arch, scale, blocks, feat), name
        (spec,) = VisionKitUpscaleModelLoader().load(name, "auto")
        assert spec.kind == "upscale"
        with get_cache().use_entry(spec) as entry:
            assert entry.meta["scale"] == scale and U.network_scale(entry.value) == scale
            assert type(entry.value).__name__ == arch
            assert next(entry.value.parameters()).dtype == torch.float32  # auto on CPU


def test_variants_are_read_from_tensors_not_names(tmp_path):
    """Any RRDBNet / SRVGGNetCompact variant: x1 RRDB, 3 blocks, relu SRVGG, x3 SRVGG; names say nothing."""
    from visionkit_pack.models.compat import import_basicsr_archs

    _, SRVGG = import_basicsr_archs()
    cases = {
        "x4_but_really_x1.pth": (tiny_models.tiny_rrdbnet(1, num_block=3), ("RRDBNet", 1, 3, 8)),
        "anime_6B_lookalike.safetensors": (tiny_models.tiny_rrdbnet(4, num_block=6, num_feat=12),
                                           ("RRDBNet", 4, 6, 12)),
        "relu.pth": (SRVGG(num_in_ch=3, num_out_ch=3, num_feat=6, num_conv=2, upscale=3, act_type="relu"),
                     ("SRVGGNetCompact", 3, 2, 6)),
    }
    for name, (net, want) in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        else:
            torch.save({"params_ema": net.state_dict()}, path)
        spec, entry = U.load_upscale_model(str(path))
        a = entry.meta
        assert a["scale"] == want[1] and a["arch"].startswith(f"{want[0]} x{want[1]}, {want[2]} "), (name, a)
        img = test_image(12, 16)
        out = U.upscale_image(spec, img, tile=0)
        assert out.shape == (1, 12 * want[1], 16 * want[1], 3)


def test_foreign_files_get_a_clear_message(tmp_path):
    sam = {"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
           "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(24, 8),
           "prompt_encoder.point_embeddings.0.weight": torch.zeros(1, 8),
           "mask_decoder.iou_token.weight": torch.zeros(1, 8)}
    swinir = {"conv_first.weight": torch.zeros(8, 3, 3, 3), "layers.0.residual_group.blocks.0.norm1.weight":
              torch.zeros(8), "conv_last.weight": torch.zeros(3, 8, 3, 3)}
    for name, sd, what in (("sam_vit_b.pth", sam, "SAM"), ("RealESRGAN_x4plus.pth", swinir, "SwinIR"),
                           ("weird.safetensors", {"foo.weight": torch.zeros(2, 2)}, "unknown model")):
        path = tmp_path / name
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(sd, str(path))
        else:
            torch.save(sd, path)
        with pytest.raises(U.UpscaleModelError) as ei:
            U.load_upscale_model(str(path))
        msg = str(ei.value)
        assert "not a Real-ESRGAN model" in msg and what in msg and "upscale_models" in msg, msg


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_object_pth_is_refused_by_the_loader(tmp_path):
    sd = tiny_models.tiny_srvgg(2).state_dict()
    torch.save({"params": sd, "extra": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(U.UpscaleModelError, match="pickled Python objects"):
        U.load_upscale_model(str(tmp_path / "pickled.pth"))


# ---------------------------------------------------------------- tile plan
def test_tile_plan_covers_each_pixel_once_with_context():
    for length, tile, pad, mult in itertools.product((1, 7, 32, 33, 64, 100, 129, 250, 1000, 4097),
                                                     (0, 16, 32, 50, 64, 512), (0, 3, 10, 16, 40), (1, 2, 4)):
        length = length + (-length) % mult
        check_plan(U.plan_axis(length, tile, pad, mult), length, tile, pad, mult)


def check_plan(p, length, tile, pad, mult):
    assert len(p.starts) == len(p.cores) >= 1
    assert p.window <= length and p.window % mult == 0
    if tile:
        tile_m, pad_m = max(tile // mult, 1) * mult, -(-pad // mult) * mult
        assert p.window <= tile_m + 2 * pad_m  # memory is bounded by the tile, not the image
    else:
        assert p.count == 1
    cuts = [c for core in p.cores for c in core]
    assert cuts[0] == 0 and cuts[-1] == length and all(a == b for a, b in zip(cuts[1:-1:2], cuts[2:-1:2]))
    for i, (s, (c0, c1)) in enumerate(zip(p.starts, p.cores)):
        assert 0 <= s and s + p.window <= length and s % mult == 0
        assert s <= c0 < c1 <= s + p.window
        if c0 > 0:
            assert c0 - s >= pad, (i, p)  # context before the core, unless it is the image border
        if c1 < length:
            assert s + p.window - c1 >= pad, (i, p)


def test_tile_count_is_the_least_for_that_window():
    # 256 px, tile 128, pad 10: two windows of 138 (what Real-ESRGAN reads), not 2 x 148
    assert U.plan_axis(256, 128, 10) == U.AxisPlan(256, 138, (0, 118), ((0, 128), (128, 256)))
    # 148 px fits in one window of tile + 2 * pad: no seam at all
    assert U.plan_axis(148, 128, 10).count == 1


# ---------------------------------------------------------------- engine vs references
@pytest.mark.parametrize("name", FIXTURES)
def test_untiled_equals_plain_forward(pack, models_dir, name):
    spec, entry = U.load_upscale_model(fixture_path(models_dir, name))
    img = test_image(20, 28, b=2)
    out = U.upscale_image(spec, img, tile=0)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous()
    torch.testing.assert_close(out, plain_forward(entry.value, img), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_tiled_is_seamless_with_default_pad(pack, models_dir, name):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, name))
    img = test_image(70, 90)
    full = U.upscale_image(spec, img, tile=0)
    tiled = U.upscale_image(spec, img, tile=32)  # default tile_pad; a 3 x 3 grid of 64-px windows
    assert (tiled - full).abs().max() <= TOL_SEAM
    # the test can see a seam: without context the tiles differ from the untiled result
    seamy = U.upscale_image(spec, img, tile=32, tile_pad=0)
    assert (seamy - full).abs().max() > TOL_SEAM


@pytest.mark.parametrize("name", ["tiny_realesr-general-x4v3.safetensors", "nested/tiny_srvgg_x2.pth"])
def test_tiles_are_exact_when_pad_covers_the_receptive_field(pack, models_dir, name):
    """SRVGG (3 + 2 convs of 3x3) sees 5 px around: with pad >= 5 tiling must not change a thing."""
    spec, _ = U.load_upscale_model(fixture_path(models_dir, name))
    img = test_image(45, 61, b=2)
    full = U.upscale_image(spec, img, tile=0)
    for tile, pad, batch in ((32, 5, 1), (16, 8, 3), (40, 6, 64)):
        out = U.upscale_image(spec, img, tile=tile, tile_pad=pad, tile_batch=batch)
        torch.testing.assert_close(out, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("tile", [0, 32])
def test_parity_with_realesrganer(pack, models_dir, tmp_path, RealESRGANer, name, tile):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, name))
    sd = U.load_state_dict(fixture_path(models_dir, name))
    img = test_image(70, 90, seed=3)
    scale = FIXTURES[name][1]
    ref = reference(RealESRGANer, name, sd, tmp_path, img, tile=tile, tile_pad=10, outscale=scale)
    ours = U.upscale_image(spec, img, tile=tile, tile_pad=10)
    assert ours.shape == ref.shape
    assert (imageops.to_uint8(ours).astype(int) - imageops.to_uint8(ref).astype(int)).__abs__().max() <= 1


@pytest.mark.parametrize("name", ["tiny_RealESRGAN_x4plus.pth", "tiny_RealESRGAN_x2plus.pth"])
def test_parity_with_prepad_odd_sizes_and_outscale(pack, models_dir, tmp_path, RealESRGANer, name):
    """Odd sizes (x2 pads to even by reflection), Real-ESRGAN's pre_pad, and a non-integer outscale."""
    spec, _ = U.load_upscale_model(fixture_path(models_dir, name))
    sd = U.load_state_dict(fixture_path(models_dir, name))
    img = test_image(37, 51, seed=4)
    for pre_pad, outscale in ((10, None), (0, 2.5), (3, 1.3)):
        scale = FIXTURES[name][1]
        ref = reference(RealESRGANer, name, sd, tmp_path, img, tile=16, tile_pad=10, pre_pad=pre_pad,
                        outscale=outscale or scale)
        ours = U.upscale_image(spec, img, tile=16, tile_pad=10, pre_pad=pre_pad, outscale=outscale)
        assert ours.shape == ref.shape, (pre_pad, outscale)
        diff = np.abs(imageops.to_uint8(ours).astype(int) - imageops.to_uint8(ref).astype(int))
        assert diff.max() <= 1, (pre_pad, outscale, diff.max())


@pytest.mark.parametrize("alpha_mode, upsampler", [("network", "realesrgan"), ("bilinear", "bilinear")])
def test_rgba_parity_with_realesrganer(pack, models_dir, tmp_path, RealESRGANer, alpha_mode, upsampler):
    name = "tiny_RealESRGAN_x4plus.pth"
    spec, _ = U.load_upscale_model(fixture_path(models_dir, name))
    sd = U.load_state_dict(fixture_path(models_dir, name))
    img = test_image(40, 52, c=4, seed=5)
    ref = reference(RealESRGANer, name, sd, tmp_path, img, tile=24, tile_pad=10, outscale=4,
                    alpha_upsampler=upsampler)
    ours = U.upscale_image(spec, img, tile=24, tile_pad=10, alpha_mode=alpha_mode)
    assert ours.shape == ref.shape == (1, 160, 208, 4)
    diff = np.abs(imageops.to_uint8(ours).astype(int) - imageops.to_uint8(ref).astype(int))
    assert diff.max() <= 1


# ---------------------------------------------------------------- engine behaviour
def test_batch_equals_image_by_image(pack, models_dir):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    img = test_image(30, 34, b=3, seed=6)
    batch = U.upscale_image(spec, img, tile=16, tile_pad=8, tile_batch=5)
    for i in range(3):
        one = U.upscale_image(spec, img[i:i + 1], tile=16, tile_pad=8, tile_batch=1)
        torch.testing.assert_close(batch[i:i + 1], one, atol=1e-5, rtol=0)


def test_rgba_keeps_alpha_upscaled_each_way(pack, models_dir):
    spec, entry = U.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    img = test_image(24, 20, c=4, seed=7)
    rgb = U.upscale_image(spec, img[..., :3], tile=0)
    for mode in ("network", "bicubic", "bilinear"):
        out = U.upscale_image(spec, img, tile=16, tile_pad=8, alpha_mode=mode)
        assert out.shape == (1, 96, 80, 4)
        torch.testing.assert_close(out[..., :3], rgb, atol=1e-5, rtol=0)  # the colour is untouched by alpha
        if mode == "network":
            a3 = plain_forward(entry.value, img[..., 3:].expand(-1, -1, -1, 3).contiguous())
            want = a3[..., 0] * 0.299 + a3[..., 1] * 0.587 + a3[..., 2] * 0.114
        else:
            want = torch.nn.functional.interpolate(img[..., 3][:, None], scale_factor=4, mode=mode,
                                                   align_corners=False)[:, 0].clamp(0, 1)
        torch.testing.assert_close(out[..., 3], want, atol=1e-5, rtol=0)
    # an opaque image stays opaque through the bicubic path
    opaque = torch.cat([img[..., :3], torch.ones_like(img[..., :1])], -1)
    assert torch.all(U.upscale_image(spec, opaque, tile=16, alpha_mode="bicubic")[..., 3] == 1)


@pytest.mark.parametrize("h, w, outscale", [(37, 51, 1.15), (37, 51, 3.3), (20, 10, 2.5), (33, 17, 0.5),
                                            (100, 3, 1.15), (64, 64, 4.0)])
def test_outscale_size_math_like_realesrgan(pack, models_dir, h, w, outscale):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    out = U.upscale_image(spec, test_image(h, w), tile=0, outscale=outscale)
    assert out.shape == (1, int(h * outscale), int(w * outscale), 3)  # Real-ESRGAN: int(), not round()
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert U.output_size(100, 3, 1.15) == (114, 3)  # 100 * 1.15 = 114.99999999999999
    with pytest.raises(U.UpscaleInputError, match="larger outscale"):
        U.upscale_image(spec, test_image(4, 4), tile=0, outscale=0.1)


def test_bad_engine_options_are_explained(pack, models_dir):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, "nested/tiny_srvgg_x2.pth"))
    img = test_image(8, 8)
    for kw, msg in (({"tile": -1}, "must be >= 0"), ({"tile_pad": -3}, "must be >= 0"),
                    ({"alpha_mode": "magic"}, "not one of network"), ({"outscale": -2.0}, "positive number")):
        with pytest.raises(U.UpscaleInputError, match=msg):
            U.upscale_image(spec, img, **kw)
    with pytest.raises(imageops.ImageInputError, match="channels"):
        U.upscale_image(spec, torch.rand(1, 8, 8, 2))


def test_tiny_images_and_pads_longer_than_the_image(pack, models_dir):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    for h, w in ((1, 1), (1, 5), (3, 2)):
        img = test_image(h, w)
        out = U.upscale_image(spec, img, tile=32, tile_pad=16, pre_pad=10)
        assert out.shape == (1, 2 * h, 2 * w, 3) and torch.isfinite(out).all()


def test_cached_model_is_unchanged_by_a_run(pack, models_dir):
    from visionkit_pack.models.cache import get_cache

    spec, entry = U.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x4plus.pth"))
    before = {k: v.clone() for k, v in entry.value.state_dict().items()}
    training = entry.value.training
    U.upscale_image(spec, test_image(30, 30, c=4, b=2), tile=16, tile_pad=4, tile_batch=3)
    with get_cache().use(spec) as net:
        after = net.state_dict()
        assert net is entry.value and net.training == training
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert get_cache().entries()[0]["in_use"] is False


def test_progress_reports_once_per_tile(pack, models_dir):
    spec, _ = U.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    img = test_image(70, 90, c=4, b=2)
    tile, pad = 32, 8
    ny = U.plan_axis(70, tile, pad, 2).count
    nx = U.plan_axis(90, tile, pad, 2).count
    for mode, per_image in (("network", 2), ("bicubic", 1)):
        calls = []
        U.upscale_image(spec, img, tile=tile, tile_pad=pad, tile_batch=4, alpha_mode=mode,
                        progress=lambda done, total, calls=calls: calls.append((done, total)))
        n = ny * nx * 2 * per_image
        assert n > 4 and calls == [(i, n) for i in range(1, n + 1)], mode


def test_cancel_mid_run_leaves_the_cache_usable(pack, models_dir, monkeypatch):
    from visionkit_pack.models.cache import get_cache

    class Interrupted(Exception):
        pass

    spec, _ = U.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x4plus.pth"))
    img = test_image(64, 64)
    want = U.upscale_image(spec, img, tile=32, tile_pad=8)
    checks = {"n": 0}

    def cancel_after_3():
        checks["n"] += 1
        if checks["n"] > 3:
            raise Interrupted("user pressed Cancel")

    monkeypatch.setattr(host, "throw_if_cancelled", cancel_after_3)
    done = []
    with pytest.raises(Interrupted):
        U.upscale_image(spec, img, tile=32, tile_pad=8, progress=lambda d, t: done.append(d))
    assert 0 < len(done) < 4  # stopped between tiles, not at the end
    cache = get_cache()
    (e,) = cache.entries()
    assert e["in_use"] is False
    assert cache.purge() == {"purged": [e["key"]], "deferred": [], "unknown": []}  # not pinned
    monkeypatch.undo()
    again = U.upscale_image(spec, img, tile=32, tile_pad=8)  # reloads, runs, same result
    torch.testing.assert_close(again, want, atol=0, rtol=0)


def test_half_precision_network_runs_and_returns_float32(pack, models_dir):
    """fp16 on CUDA: the engine runs the net in its dtype; checked here with a half copy on CPU."""
    _, entry = U.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    import copy

    half = copy.deepcopy(entry.value).half()
    img = test_image(16, 20)
    out = U.upscale_tensor(half, img, tile=8, tile_pad=5)  # the pinned torch has fp16 CPU convolutions
    assert out.dtype == torch.float32
    assert (out - U.upscale_tensor(entry.value, img, tile=0)).abs().max() < 0.02


# ---------------------------------------------------------------- node
def test_node_is_registered_and_validates_cheaply(pack):
    from visionkit_pack.nodes.upscale import VisionKitUpscale

    assert pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"] is VisionKitUpscale
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["VisionKitUpscale"] == "VisionKit Upscale Image (Real-ESRGAN)"
    assert VisionKitUpscale.CATEGORY == "VisionKit/upscale" and VisionKitUpscale.DESCRIPTION
    types = VisionKitUpscale.INPUT_TYPES()
    for section in types.values():
        for name, (_typ, opts) in section.items():
            assert opts.get("tooltip"), name
    v = VisionKitUpscale.VALIDATE_INPUTS
    assert v(outscale=0.0, tile_size=0, tile_pad=0, alpha_upscale="network", tile_batch=0) is True
    assert v(outscale=1.5, tile_size=32, tile_pad=256, alpha_upscale="bicubic", tile_batch=64) is True
    assert v() is True  # linked inputs arrive as None
    for kw, msg in (({"tile_size": 16}, "tile_size 16 must be 0"), ({"tile_size": 9000}, "between 32"),
                    ({"tile_pad": -1}, "tile_pad"), ({"outscale": -1.0}, "outscale"),
                    ({"outscale": 40.0}, "outscale"), ({"alpha_upscale": "nearest"}, "one of"),
                    ({"tile_batch": 99}, "tile_batch")):
        assert msg in v(**kw), kw


def test_node_runs_loader_output_and_explains_bad_model_input(pack):
    from visionkit_pack.nodes.upscale import (
        VisionKitUpscale,
        VisionKitUpscaleModelLoader,
    )

    (spec,) = VisionKitUpscaleModelLoader().load("tiny_RealESRGAN_x2plus.pth", "auto")
    img = test_image(21, 33, c=4, b=2)
    (out,) = VisionKitUpscale().upscale(spec, img, outscale=0.0, tile_size=32, tile_pad=16)
    assert out.shape == (2, 42, 66, 4)
    (out,) = VisionKitUpscale().upscale(spec, img[..., :3], outscale=3.0, tile_size=0, tile_pad=16,
                                        alpha_upscale="bicubic")
    assert out.shape == (2, 63, 99, 3)
    with pytest.raises(ValueError, match="not a Real-ESRGAN model.*Load Upscale Model"):
        VisionKitUpscale().upscale("RealESRGAN_x4plus.pth", img)
    with pytest.raises(ValueError, match="tile_size 8"):
        VisionKitUpscale().upscale(spec, img, tile_size=8)


def test_core_nodes_load_upscale_save(pack, tmp_path):
    """LoadImage -> VisionKitUpscale -> SaveImage, API format, with the core nodes' stand-ins."""
    from vk_testing.runner import WorkflowError, WorkflowRunner

    src = imageops.to_uint8(test_image(24, 40, seed=9))[0]
    Image.fromarray(src).save(tmp_path / "photo.png")
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}},
        "2": {"class_type": "VisionKitUpscaleModelLoader",
              "inputs": {"model_name": "tiny_realesr-general-x4v3.safetensors", "dtype": "auto"}},
        "3": {"class_type": "VisionKitUpscale", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0],
                                                           "outscale": 2.0, "tile_size": 32, "tile_pad": 16,
                                                           "alpha_upscale": "network", "tile_batch": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "vk_upscale"}},
    }
    res = WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(wf)
    (saved,) = res.saved["4"]
    assert saved.shape == (1, 48, 80, 3) and saved.dtype == torch.float32
    # what SaveImage does with it
    arr = np.clip(255.0 * saved[0].cpu().numpy(), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").size == (80, 48)
    bad = {**wf, "3": {**wf["3"], "inputs": {**wf["3"]["inputs"], "tile_size": 20}}}
    with pytest.raises(WorkflowError, match="tile_size 20"):
        WorkflowRunner(pack.NODE_CLASS_MAPPINGS, tmp_path).run(bad)
