"""Upscaling through spandrel: loader detection (every architecture family, odd names, foreign files, dtype), the
tiled engine (seamless, batched, alpha, outscale, size rules, memory pre-check, progress, cancel) compared with
RealESRGANer on Real-ESRGAN files and with spandrel's own full-image call on every other architecture, on the
same tiny weights, and the VisionKitUpscale node."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from vk_testing import basicsr_ref, import_pack, tiny_upscale
from vk_testing.tiny_upscale import (
    REAL_ESRGAN,
    UPSCALE_FIXTURES,
    fixture_path,
    spandrel_call,
)

import_pack()
from visionkit_pack.models.core import host, imageops
from visionkit_pack.models.core import weights as W
from visionkit_pack.models.upscale import arch as A
from visionkit_pack.models.upscale import tile_plan as P
from visionkit_pack.models.upscale import tiles as T

FIXTURES = UPSCALE_FIXTURES
OTHERS = [n for n in FIXTURES if n not in REAL_ESRGAN]
TOL_SEAM = 2 / 255
TOL_PARITY = 1 / 255


smooth_image = tiny_upscale.smooth_image


@pytest.fixture(scope="module")
def RealESRGANer():
    return basicsr_ref.realesrganer()


def plain_forward(model, image):
    with torch.no_grad():
        return model(image.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)


def reference(RealESRGANer, sd, tmp_path, rgb_or_rgba, **kw):
    """RealESRGANer.enhance on the same weights, loaded from a file by RealESRGANer itself."""
    ref_path = tmp_path / "ref_weights.pth"
    torch.save({"params": sd}, ref_path)  # RealESRGANer wants params / params_ema in a .pth
    model, scale = basicsr_ref.basicsr_network(sd)
    up = RealESRGANer(scale=scale, model_path=str(ref_path), model=model, tile=kw.pop("tile"),
                      tile_pad=kw.pop("tile_pad"), pre_pad=kw.pop("pre_pad", 0), half=False, device="cpu")
    a = imageops.to_uint8(rgb_or_rgba[0])
    bgr = np.ascontiguousarray(a[..., [2, 1, 0, 3]] if a.shape[-1] == 4 else a[..., ::-1])
    out, _mode = up.enhance(bgr, **kw)
    rgb = out[..., [2, 1, 0, 3]] if out.shape[-1] == 4 else out[..., ::-1]
    return imageops.from_uint8(np.ascontiguousarray(rgb))[None]


def max_level_diff(a, b) -> int:
    return int(np.abs(imageops.to_uint8(a).astype(int) - imageops.to_uint8(b).astype(int)).max())


# ---------------------------------------------------------------- tile plan
def test_tile_plan_covers_each_pixel_once_with_context():
    for length, tile, pad, mult in itertools.product((1, 7, 32, 33, 64, 100, 129, 250, 1000, 4097),
                                                     (0, 16, 32, 50, 64, 512), (0, 3, 10, 16, 40), (1, 2, 4)):
        length = length + (-length) % mult
        check_plan(P.plan_axis(length, tile, pad, mult), length, tile, pad, mult)


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
    assert P.plan_axis(256, 128, 10) == P.AxisPlan(256, 138, (0, 118), ((0, 128), (128, 256)))
    # 148 px fits in one window of tile + 2 * pad: no seam at all
    assert P.plan_axis(148, 128, 10).count == 1


# ---------------------------------------------------------------- engine vs references
@pytest.mark.parametrize("name", FIXTURES)
def test_untiled_equals_spandrel_call(pack, models_dir, name):
    """tile 0 is spandrel's own full-image call on the same weights, padding to the size rules included (odd
    sizes; sizes under SwinIR's / HAT's minimum). Real-ESRGAN x2 follows RealESRGANer's pad to 2 where
    spandrel pads to 4, so it is compared at sizes that are multiples of 4 (and with RealESRGANer below)."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    sd = W.load_state_dict(fixture_path(models_dir, name))
    sizes = [(20, 28), (12, 8)] if name == "tiny_RealESRGAN_x2plus.pth" else [(37, 51), (13, 6)]
    for h, w in sizes:
        img = smooth_image(h, w, b=2, seed=h)
        out = T.upscale_image(spec, img, tile=0)
        assert out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous()
        torch.testing.assert_close(out, spandrel_call(sd, img), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_tiled_is_seamless_with_default_pad(pack, models_dir, name):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    img = smooth_image(70, 90)
    full = T.upscale_image(spec, img, tile=0)
    tiled = T.upscale_image(spec, img, tile=32)  # default tile_pad; a 3 x 3 grid of 64-px windows
    assert (tiled - full).abs().max() <= TOL_SEAM
    # the test can see a seam: without context the tiles differ from the untiled result
    seamy = T.upscale_image(spec, img, tile=32, tile_pad=0)
    assert (seamy - full).abs().max() > TOL_SEAM


@pytest.mark.parametrize("name", OTHERS)
def test_tiled_matches_spandrel_call_on_odd_sizes(pack, models_dir, name):
    """Tiles with context give spandrel's full-image result within one level, on an odd size (SwinIR / HAT:
    windows that are no multiple of the attention window, padded inside the network)."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    sd = W.load_state_dict(fixture_path(models_dir, name))
    img = smooth_image(45, 61, seed=8)
    ours = T.upscale_image(spec, img, tile=32, tile_pad=16, tile_batch=3)
    assert max_level_diff(ours, spandrel_call(sd, img)) <= 1


@pytest.mark.parametrize("name", ["tiny_realesr-general-x4v3.safetensors", "nested/tiny_srvgg_x2.pth"])
def test_tiles_are_exact_when_pad_covers_the_receptive_field(pack, models_dir, name):
    """SRVGG (3 + 2 convs of 3x3) sees 5 px around: with pad >= 5 tiling must not change a thing."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    img = smooth_image(45, 61, b=2)
    full = T.upscale_image(spec, img, tile=0)
    for tile, pad, batch in ((32, 5, 1), (16, 8, 3), (40, 6, 64)):
        out = T.upscale_image(spec, img, tile=tile, tile_pad=pad, tile_batch=batch)
        torch.testing.assert_close(out, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", REAL_ESRGAN)
@pytest.mark.parametrize("tile", [0, 32])
def test_parity_with_realesrganer(pack, models_dir, tmp_path, RealESRGANer, name, tile):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    sd = W.load_state_dict(fixture_path(models_dir, name))
    img = smooth_image(70, 90, seed=3)
    scale = FIXTURES[name][1]
    ref = reference(RealESRGANer, sd, tmp_path, img, tile=tile, tile_pad=10, outscale=scale)
    ours = T.upscale_image(spec, img, tile=tile, tile_pad=10)
    assert ours.shape == ref.shape
    assert max_level_diff(ours, ref) <= 1


@pytest.mark.parametrize("name", ["tiny_RealESRGAN_x4plus.pth", "tiny_RealESRGAN_x2plus.pth"])
def test_parity_with_prepad_odd_sizes_and_outscale(pack, models_dir, tmp_path, RealESRGANer, name):
    """Odd sizes (x2 pads to even by reflection), Real-ESRGAN's pre_pad, and a non-integer outscale; on
    fixtures whose output spans 0..1, so that a wrong padding mode (symmetric for reflect) shows."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    sd = W.load_state_dict(fixture_path(models_dir, name))
    img = smooth_image(37, 51, seed=4)
    for pre_pad, outscale in ((10, None), (0, 2.5), (3, 1.3)):
        scale = FIXTURES[name][1]
        ref = reference(RealESRGANer, sd, tmp_path, img, tile=16, tile_pad=10, pre_pad=pre_pad,
                        outscale=outscale or scale)
        ours = T.upscale_image(spec, img, tile=16, tile_pad=10, pre_pad=pre_pad, outscale=outscale)
        assert ours.shape == ref.shape, (pre_pad, outscale)
        diff = max_level_diff(ours, ref)
        assert diff <= 1, (pre_pad, outscale, diff)


@pytest.mark.parametrize("alpha_mode, upsampler", [("network", "realesrgan"), ("bilinear", "bilinear")])
@pytest.mark.parametrize("name", ["tiny_RealESRGAN_x4plus.pth", "tiny_RealESRGAN_x2plus.pth"])
def test_rgba_parity_with_realesrganer(pack, models_dir, tmp_path, RealESRGANer, name, alpha_mode, upsampler):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    sd = W.load_state_dict(fixture_path(models_dir, name))
    scale = FIXTURES[name][1]
    img = smooth_image(41, 53, c=4, seed=5)  # odd: x2 pads to even
    ref = reference(RealESRGANer, sd, tmp_path, img, tile=24, tile_pad=10, outscale=scale,
                    alpha_upsampler=upsampler)
    ours = T.upscale_image(spec, img, tile=24, tile_pad=10, alpha_mode=alpha_mode)
    assert ours.shape == ref.shape == (1, 41 * scale, 53 * scale, 4)
    assert max_level_diff(ours, ref) <= 1


def test_size_rules_pad_windows_not_the_picture(pack, models_dir):
    """HAT needs at least 16 px: tiny images and tiles under that are padded to it (as spandrel pads), the
    output keeps the image's own size."""
    spec, entry = A.load_upscale_model(fixture_path(models_dir, "renamed_upscaler.safetensors"))
    assert entry.value.minimum == 16
    sd = W.load_state_dict(fixture_path(models_dir, "renamed_upscaler.safetensors"))
    for h, w in ((1, 1), (5, 7), (16, 3)):
        img = smooth_image(h, w, seed=h + w)
        out = T.upscale_image(spec, img, tile=8, tile_pad=2)
        assert out.shape == (1, 4 * h, 4 * w, 3)
        torch.testing.assert_close(out, spandrel_call(sd, img), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- engine behaviour
def test_batch_equals_image_by_image(pack, models_dir):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    img = smooth_image(30, 34, b=3, seed=6)
    batch = T.upscale_image(spec, img, tile=16, tile_pad=8, tile_batch=5)
    for i in range(3):
        one = T.upscale_image(spec, img[i:i + 1], tile=16, tile_pad=8, tile_batch=1)
        torch.testing.assert_close(batch[i:i + 1], one, atol=1e-5, rtol=0)


def test_rgba_keeps_alpha_upscaled_each_way(pack, models_dir):
    spec, entry = A.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    img = smooth_image(24, 20, c=4, seed=7)
    rgb = T.upscale_image(spec, img[..., :3], tile=0)
    for mode in ("network", "bicubic", "bilinear"):
        out = T.upscale_image(spec, img, tile=16, tile_pad=8, alpha_mode=mode)
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
    assert torch.all(T.upscale_image(spec, opaque, tile=16, alpha_mode="bicubic")[..., 3] == 1)


@pytest.mark.parametrize("h, w, outscale", [(37, 51, 1.15), (37, 51, 3.3), (20, 10, 2.5), (33, 17, 0.5),
                                            (100, 3, 1.15), (64, 64, 4.0)])
def test_outscale_size_math_like_realesrgan(pack, models_dir, h, w, outscale):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    out = T.upscale_image(spec, smooth_image(h, w), tile=0, outscale=outscale)
    assert out.shape == (1, int(h * outscale), int(w * outscale), 3)  # Real-ESRGAN: int(), not round()
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert T.output_size(100, 3, 1.15) == (114, 3)  # 100 * 1.15 = 114.99999999999999
    with pytest.raises(T.UpscaleInputError, match="larger outscale"):
        T.upscale_image(spec, smooth_image(4, 4), tile=0, outscale=0.1)


def test_bad_engine_options_are_explained(pack, models_dir):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "nested/tiny_srvgg_x2.pth"))
    img = smooth_image(8, 8)
    for kw, msg in (({"tile": -1}, "must be >= 0"), ({"tile_pad": -3}, "must be >= 0"),
                    ({"alpha_mode": "magic"}, "not one of network"), ({"outscale": -2.0}, "positive number")):
        with pytest.raises(T.UpscaleInputError, match=msg):
            T.upscale_image(spec, img, **kw)
    with pytest.raises(imageops.ImageInputError, match="channels"):
        T.upscale_image(spec, torch.rand(1, 8, 8, 2))


def test_tiny_images_and_pads_longer_than_the_image(pack, models_dir):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    for h, w in ((1, 1), (1, 5), (3, 2)):
        img = smooth_image(h, w)
        out = T.upscale_image(spec, img, tile=32, tile_pad=16, pre_pad=10)
        assert out.shape == (1, 2 * h, 2 * w, 3) and torch.isfinite(out).all()


def test_cached_model_is_unchanged_by_a_run(pack, models_dir):
    from visionkit_pack.models.core.cache import get_cache

    spec, entry = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x4plus.pth"))
    before = {k: v.clone() for k, v in entry.value.module.state_dict().items()}
    training = entry.value.module.training
    T.upscale_image(spec, smooth_image(30, 30, c=4, b=2), tile=16, tile_pad=4, tile_batch=3)
    with get_cache().use(spec) as net:
        after = net.module.state_dict()
        assert net is entry.value and net.module.training == training
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert get_cache().entries()[0]["in_use"] is False


def test_progress_reports_once_per_tile(pack, models_dir):
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    img = smooth_image(70, 90, c=4, b=2)
    tile, pad = 32, 8
    ny = P.plan_axis(70, tile, pad, 2).count
    nx = P.plan_axis(90, tile, pad, 2).count
    for mode, per_image in (("network", 2), ("bicubic", 1)):
        calls = []
        T.upscale_image(spec, img, tile=tile, tile_pad=pad, tile_batch=4, alpha_mode=mode,
                        progress=lambda done, total, calls=calls: calls.append((done, total)))
        n = ny * nx * 2 * per_image
        assert n > 4 and calls == [(i, n) for i in range(1, n + 1)], mode


def test_cancel_mid_run_leaves_the_cache_usable(pack, models_dir, monkeypatch):
    from visionkit_pack.models.core.cache import get_cache

    class Interrupted(Exception):
        pass

    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x4plus.pth"))
    img = smooth_image(64, 64)
    want = T.upscale_image(spec, img, tile=32, tile_pad=8)
    checks = {"n": 0}

    def cancel_after_3():
        checks["n"] += 1
        if checks["n"] > 3:
            raise Interrupted("user pressed Cancel")

    monkeypatch.setattr(host, "throw_if_cancelled", cancel_after_3)
    done = []
    with pytest.raises(Interrupted):
        T.upscale_image(spec, img, tile=32, tile_pad=8, progress=lambda d, t: done.append(d))
    assert 0 < len(done) < 4  # stopped between tiles, not at the end
    cache = get_cache()
    (e,) = cache.entries()
    assert e["in_use"] is False
    assert cache.purge() == {"purged": [e["key"]], "deferred": [], "unknown": []}  # not pinned
    monkeypatch.undo()
    again = T.upscale_image(spec, img, tile=32, tile_pad=8)  # reloads, runs, same result
    torch.testing.assert_close(again, want, atol=0, rtol=0)


def test_memory_precheck_refuses_with_an_estimate(pack, models_dir, monkeypatch):
    """What cannot fit in free memory is refused before any work, with the estimate and what to change."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, "tiny_4x-UltraSharp-oldlayout.pth"))
    img = smooth_image(64, 64, b=2)
    want_out = 2 * 256 * 256 * 3 * 4
    free = {"cpu": want_out // 2}
    monkeypatch.setattr(T, "available_bytes", lambda device: free["cpu"])
    calls = []
    with pytest.raises(T.UpscaleInputError, match=r"upscaling 2 image\(s\) of 64x64 by x4 needs about .* free") as ei:
        T.upscale_image(spec, img, tile=32, progress=lambda d, t: calls.append(d))
    assert "the result 2 MiB" in str(ei.value) and "lower tile_size" in str(ei.value) and calls == []
    free["cpu"] = None  # unknown: nothing is refused
    assert T.upscale_image(spec, img, tile=32).shape == (2, 256, 256, 3)
    free["cpu"] = 64 << 30
    assert T.upscale_image(spec, img, tile=32).shape == (2, 256, 256, 3)
    # the estimate grows with the tile, so a smaller tile is real advice
    assert T.tile_bytes(_model(spec), 64, 64, 4) == 4 * T.tile_bytes(_model(spec), 32, 32, 4)


def _model(spec):
    from visionkit_pack.models.core.cache import get_cache

    with get_cache().use(spec) as m:
        return m


def test_half_precision_network_runs_and_returns_float32(pack, models_dir):
    """fp16 on CUDA: the engine runs the net in its dtype; checked here with a half copy on CPU."""
    _, entry = A.load_upscale_model(fixture_path(models_dir, "tiny_realesr-general-x4v3.safetensors"))
    import copy

    half = copy.deepcopy(entry.value)
    half.descriptor.half()
    img = smooth_image(16, 20)
    out = T.upscale_tensor(half, img, tile=8, tile_pad=5)  # the pinned torch has fp16 CPU convolutions
    assert out.dtype == torch.float32
    assert (out - T.upscale_tensor(entry.value, img, tile=0)).abs().max() < 0.02


# ---------------------------------------------------------------- node
def test_node_is_registered_and_validates_cheaply(pack):
    from visionkit_pack.nodes.upscale import VisionKitUpscale

    assert pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"] is VisionKitUpscale
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["VisionKitUpscale"] == "VisionKit Upscale Image"
    assert VisionKitUpscale.CATEGORY == "VisionKit/upscale" and VisionKitUpscale.DESCRIPTION
    types = VisionKitUpscale.INPUT_TYPES()
    for section in types.values():
        for name, (_typ, opts) in section.items():
            assert opts.get("tooltip"), name
    from visionkit_pack.nodes.upscale import check_settings

    # VALIDATE_INPUTS names only tile_size (0 or at least 32: no min/max can say it); ComfyUI range-checks the
    # other numbers from INPUT_TYPES; upscale() runs check_settings on all of them (linked values, NaN).
    v = VisionKitUpscale.VALIDATE_INPUTS
    assert v(tile_size=0) is True and v(tile_size=32) is True
    assert v() is True  # a linked input arrives as None
    for ts, msg in ((16, "tile_size 16 must be 0"), (9000, "between 32")):
        assert msg in v(tile_size=ts) and msg in check_settings(tile_size=ts)
    assert check_settings(outscale=0.0, tile_size=0, tile_pad=0, alpha_upscale="network", tile_batch=0) is True
    assert check_settings(outscale=1.5, tile_size=32, tile_pad=256, alpha_upscale="bicubic", tile_batch=64) is True
    req, opt = types["required"], types["optional"]
    for kw, msg in (({"tile_pad": -1}, "tile_pad"), ({"outscale": -1.0}, "outscale"),
                    ({"outscale": 40.0}, "outscale"), ({"alpha_upscale": "nearest"}, "one of"),
                    ({"tile_batch": 99}, "tile_batch")):
        assert msg in check_settings(**kw), kw
        (name, value), = kw.items()
        spec = {**req, **opt}[name]
        assert (value not in spec[0]) if isinstance(spec[0], list) else \
            (value < spec[1]["min"] or value > spec[1]["max"]), kw  # ComfyUI refuses it at /prompt too


def test_node_runs_loader_output_and_explains_bad_model_input(pack):
    from visionkit_pack.nodes.upscale import (
        VisionKitUpscale,
        VisionKitUpscaleModelLoader,
    )

    (spec,) = VisionKitUpscaleModelLoader().load("tiny_RealESRGAN_x2plus.pth", "auto")
    img = smooth_image(21, 33, c=4, b=2)
    (out,) = VisionKitUpscale().upscale(spec, img, outscale=0.0, tile_size=32, tile_pad=16)
    assert out.shape == (2, 42, 66, 4)
    (out,) = VisionKitUpscale().upscale(spec, img[..., :3], outscale=3.0, tile_size=0, tile_pad=16,
                                        alpha_upscale="bicubic")
    assert out.shape == (2, 63, 99, 3)
    with pytest.raises(ValueError, match="not an upscale model.*Load Upscale Model"):
        VisionKitUpscale().upscale("RealESRGAN_x4plus.pth", img)
    with pytest.raises(ValueError, match="tile_size 8"):
        VisionKitUpscale().upscale(spec, img, tile_size=8)


def test_core_nodes_load_upscale_save(pack, tmp_path):
    """LoadImage -> VisionKitUpscale -> SaveImage, API format, with the core nodes' stand-ins."""
    from vk_testing.runner import WorkflowError, WorkflowRunner

    src = imageops.to_uint8(smooth_image(24, 40, seed=9))[0]
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
