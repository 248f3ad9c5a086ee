"""Upscale models through spandrel: every fixture family detected from its tensors (not its name), foreign
files, damaged files, extra (non-commercial) architectures left out, pickles refused, dtype by what the
architecture supports; and the fixtures' outputs span 0..1 so the engine tests' one-level tolerances mean
something (issue 21)."""
from __future__ import annotations

import pytest
import torch
from vk_testing import import_pack, tiny_upscale
from vk_testing.tiny_upscale import UPSCALE_FIXTURES, fixture_path

import_pack()
from visionkit_pack.models.upscale import arch as A
from visionkit_pack.models.upscale import tiles as T

FIXTURES = UPSCALE_FIXTURES
smooth_image = tiny_upscale.smooth_image


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_outputs_span_the_range(pack, models_dir, name):
    """A tolerance of one level means something only if the outputs use the range (issue 21: the first tiny
    RRDBNets gave 0 .. 0.067, a third of it clamped to 0)."""
    spec, _ = A.load_upscale_model(fixture_path(models_dir, name))
    out = T.upscale_image(spec, smooth_image(40, 52, seed=1), tile=0)
    lo, hi = float(out.quantile(0.02)), float(out.quantile(0.98))
    assert hi - lo > 0.4 and lo < 0.3 and hi > 0.7, (name, lo, hi)  # the test image itself spans ~0.25 .. 0.75
    assert float((out == 0).float().mean()) < 0.1 and float((out == 1).float().mean()) < 0.1, name


def test_loader_detects_every_fixture(pack, models_dir):
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.nodes.upscale import VisionKitUpscaleModelLoader

    for name, (arch, scale) in FIXTURES.items():
        (spec,) = VisionKitUpscaleModelLoader().load(name, "auto")
        assert spec.kind == "upscale"
        with get_cache().use_entry(spec) as entry:
            model = entry.value
            assert (model.arch, model.scale, entry.meta["scale"]) == (arch, scale, scale), name
            assert T.network_scale(model) == scale
            assert next(model.parameters()).dtype == torch.float32  # auto on CPU
            assert entry.meta["licence"] == A.LICENCES[arch]
    # Real-ESRGAN x2 pixel-unshuffles its input: sizes go to a multiple of 2, as RealESRGANer pads them
    _, entry = A.load_upscale_model(fixture_path(models_dir, "tiny_RealESRGAN_x2plus.pth"))
    assert T.input_multiple(entry.value) == 2


def test_variants_are_read_from_tensors_not_names(tmp_path):
    """Real-ESRGAN x1 (16x unshuffled input), 3 blocks, compact x3, old-layout ESRGAN with 6 blocks;
    the names say nothing or the wrong thing."""
    from safetensors.torch import save_file

    cases = {
        "x4_but_really_x1.pth": ({"params_ema": tiny_upscale.real_esrgan_keys(
            tiny_upscale.tiny_esrgan(1, num_blocks=3).state_dict())}, ("ESRGAN", 1, "3 blocks")),
        "anime_6B_lookalike.safetensors": (tiny_upscale.tiny_esrgan(4, num_blocks=6, nf=12).state_dict(),
                                           ("ESRGAN", 4, "6 blocks, 12 features")),
        "x3.pth": ({"params": tiny_upscale.tiny_compact(3, num_conv=2, num_feat=6).state_dict()},
                   ("Compact", 3, "6nf, 2nc")),
    }
    for name, (sd, (arch, scale, words)) in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            torch.save(sd, path)
        spec, entry = A.load_upscale_model(str(path))
        assert (entry.value.arch, entry.meta["scale"]) == (arch, scale) and words in entry.meta["arch"], entry.meta
        out = T.upscale_image(spec, smooth_image(12, 16), tile=0)
        assert out.shape == (1, 12 * scale, 16 * scale, 3)


def _save(path, sd):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)


def test_foreign_files_get_a_clear_message(tmp_path):
    sam = {"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
           "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(24, 8),
           "prompt_encoder.point_embeddings.0.weight": torch.zeros(1, 8),
           "mask_decoder.iou_token.weight": torch.zeros(1, 8)}
    sd15 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
            "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}
    dino = {"transformer.encoder.layers.0.self_attn.value_proj.weight": torch.zeros(4, 4),
            "backbone.0.patch_embed.proj.weight": torch.zeros(4, 3, 4, 4)}
    for name, sd, what in (("sam_vit_b.pth", sam, "SAM"), ("RealESRGAN_x4plus.pth", sd15, "Stable Diffusion"),
                           ("4x-UltraSharp.pth", dino, "Grounding DINO"),
                           ("weird.safetensors", {"foo.weight": torch.zeros(2, 2)}, "unknown model")):
        _save(tmp_path / name, sd)
        with pytest.raises(A.UpscaleModelError) as ei:
            A.load_upscale_model(str(tmp_path / name))
        msg = str(ei.value)
        assert name in msg and "not an upscale model" in msg and what in msg and "upscale_models" in msg, msg


def test_detected_but_wrong_weights_and_non_upscalers_are_explained(tmp_path):
    sd = tiny_upscale.real_esrgan_keys(tiny_upscale.tiny_esrgan(4).state_dict())
    sd["conv_hr.weight"] = sd["conv_hr.weight"][:, :4].contiguous()  # a damaged / foreign variant
    _save(tmp_path / "broken.pth", sd)
    with pytest.raises(A.UpscaleModelError, match="broken.pth looks like a ESRGAN model but its weights do not fit"):
        A.load_upscale_model(str(tmp_path / "broken.pth"))


def test_extra_arches_are_left_out_by_name(tmp_path, monkeypatch):
    """An architecture of spandrel_extra_arches (non-commercial) in spandrel's global registry, as ComfyUI adds
    them when installed: VisionKit names it and refuses it instead of running it."""
    import spandrel

    class NonCommercialArch(spandrel.Architecture):
        def __init__(self):
            super().__init__(id="FakeNC", name="FakeNC", detect=lambda sd: "fake_nc.weight" in sd)

        def load(self, state_dict):
            raise AssertionError("must not be built")

    registry = spandrel.MAIN_REGISTRY.copy()
    registry.add(spandrel.ArchSupport.from_architecture(NonCommercialArch()))
    monkeypatch.setattr(spandrel, "MAIN_REGISTRY", registry)
    _save(tmp_path / "nc.pth", {"fake_nc.weight": torch.zeros(2, 2)})
    with pytest.raises(A.UpscaleModelError, match="FakeNC model, an architecture of spandrel_extra_arches"):
        A.load_upscale_model(str(tmp_path / "nc.pth"))
    assert [a for a in A.core_architectures() if a.architecture.id == "FakeNC"] == []


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_object_pth_is_refused_by_the_loader(tmp_path):
    sd = tiny_upscale.tiny_compact(2).state_dict()
    torch.save({"params": sd, "extra": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(A.UpscaleModelError, match="pickled Python objects"):
        A.load_upscale_model(str(tmp_path / "pickled.pth"))


def test_dtype_follows_what_the_architecture_supports(pack, models_dir):
    _, swinir = A.load_upscale_model(fixture_path(models_dir, "tiny_SwinIR_x2.pth"), "fp16")
    assert next(swinir.value.parameters()).dtype == torch.float32  # spandrel: SwinIR does not run in fp16
    _, esrgan = A.load_upscale_model(fixture_path(models_dir, "tiny_4x-UltraSharp-oldlayout.pth"), "bf16")
    assert next(esrgan.value.parameters()).dtype == torch.bfloat16
    assert A.pick_dtype("auto", torch.device("cpu"), esrgan.value) == torch.float32
    with pytest.raises(A.UpscaleModelError, match="dtype 'int8'"):
        A.load_upscale_model(fixture_path(models_dir, "tiny_SwinIR_x2.pth"), "int8")
