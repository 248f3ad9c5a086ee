"""The tiny single-file checkpoints against diffusers' own LDM conversion (an independent key layout).

tests/vk_testing/tiny_sd.py writes each tiny pipeline twice: as a diffusers folder (save_pretrained) and as an
original single file, through the tests' own diffusers -> LDM mapping. The pack's loader is tested against the
folder (test_sd_pipeline.py); if the tests' mapping and the pack's conversion shared a mistake, that test
would still pass. Here diffusers' own single-file converters (diffusers.loaders.single_file_utils:
convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint,
convert_open_clip_checkpoint, the code behind from_single_file) read the same file, and must give back the
folder's state dicts, key for key and value for value: the file has the real LDM layout, so the loader's test
is a test against real files. The pack's own conversion must also equal diffusers' on every tensor.
"""
from __future__ import annotations

import json
import types

import pytest
import torch

from vk_testing import import_pack

import_pack()

PIPES = ("tiny-sd15", "tiny-sd15-inpaint", "tiny-sdxl")
# buffers a single file carries that a diffusers folder does not save
FILE_ONLY = {"embeddings.position_ids"}


def load_file(path) -> dict:
    from safetensors.torch import load_file as lf

    return lf(str(path))


def folder_state(models_dir, name: str, part: str) -> dict:
    """The folder's weights as the model classes hold them (transformers may save a text encoder's keys
    without the `text_model.` prefix that its module, and diffusers' conversion, use)."""
    d = models_dir / "diffusers" / name / part
    if part == "text_encoder":
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(str(d), local_files_only=True, torch_dtype=torch.float16).state_dict()
    if part == "text_encoder_2":
        from transformers import CLIPTextModelWithProjection

        return CLIPTextModelWithProjection.from_pretrained(str(d), local_files_only=True,
                                                           torch_dtype=torch.float16).state_dict()
    return load_file(d / "diffusion_pytorch_model.safetensors")


def config(models_dir, name: str, part: str) -> dict:
    return json.loads((models_dir / "diffusers" / name / part / "config.json").read_text())


def _plain(sd: dict) -> dict:
    """Keys without `text_model.`: transformers 5's CLIPTextModel holds its layers without that level, the
    LDM conversion (like transformers 4 and the hub's folders) names them with it; the layers are the same."""
    out = {k.removeprefix("text_model."): v for k, v in sd.items()}
    assert len(out) == len(sd)
    return {k: v for k, v in out.items() if k not in FILE_ONLY}


def assert_same(got: dict, want: dict, what: str) -> None:
    got, want = _plain(got), _plain(want)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"{what}: missing {missing[:8]} ({len(missing)}), extra {extra[:8]} ({len(extra)})"
    for k, v in want.items():
        assert got[k].shape == v.shape, (what, k, got[k].shape, v.shape)
        assert torch.equal(got[k].to(v.dtype), v), (what, k)


def diffusers_conversion(sd: dict, models_dir, name: str) -> dict:
    """{part: state dict} as diffusers' own single-file code converts the file."""
    from diffusers.loaders import single_file_utils as su

    out = {"unet": su.convert_ldm_unet_checkpoint(sd, config(models_dir, name, "unet")),
           "vae": su.convert_ldm_vae_checkpoint(sd, config(models_dir, name, "vae"))}
    if "sdxl" in name:
        out["text_encoder"] = su.convert_ldm_clip_checkpoint(
            {k: v for k, v in sd.items() if k.startswith("conditioner.embedders.0.")})
        cfg = types.SimpleNamespace(config=types.SimpleNamespace(**config(models_dir, name, "text_encoder_2")))
        out["text_encoder_2"] = su.convert_open_clip_checkpoint(cfg, sd, prefix="conditioner.embedders.1.model.")
    else:
        out["text_encoder"] = su.convert_ldm_clip_checkpoint(
            {k: v for k, v in sd.items() if k.startswith("cond_stage_model.")})
    return out


@pytest.mark.parametrize("name", PIPES)
def test_diffusers_own_conversion_of_the_file_gives_the_folder(models_dir, name):
    sd = load_file(models_dir / "checkpoints" / f"{name}.safetensors")
    converted = diffusers_conversion(sd, models_dir, name)
    assert set(converted) == ({"unet", "vae", "text_encoder", "text_encoder_2"} if "sdxl" in name
                              else {"unet", "vae", "text_encoder"})
    for part, got in converted.items():
        assert_same(got, folder_state(models_dir, name, part), f"{name} {part}")


@pytest.mark.parametrize("name", PIPES)
def test_the_packs_conversion_equals_diffusers(pack, models_dir, name):
    """The loader's modules from the single file hold exactly what diffusers' conversion of that file gives."""
    from visionkit_pack.models.sd import pipeline as sd_pipeline
    from visionkit_pack.models.sd.types import use_components

    sd = load_file(models_dir / "checkpoints" / f"{name}.safetensors")
    converted = diffusers_conversion(sd, models_dir, name)
    handle = sd_pipeline.load_pipeline(str(models_dir / "checkpoints" / f"{name}.safetensors"), "fp16")
    with use_components(handle) as comps:
        for part, want in converted.items():
            assert_same(getattr(comps, part).state_dict(), want, f"{name} {part} (pack vs diffusers)")
