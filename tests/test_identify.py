"""One identification registry (models/core/identify.py): each engine registers what its files look like;
every loader's "wrong file" message asks the registry. Checked on the tiny fixture files (real formats, real
key names), so a describer that drifts from its engine's loader fails here."""
from __future__ import annotations

from pathlib import Path

import pytest
from vk_testing import import_pack

PACK = import_pack()
from visionkit_pack.models.core import identify
from visionkit_pack.models.core.folders import FOLDERS
from visionkit_pack.models.core.weights import load_state_dict

EXPECTED_KINDS = {"sam", "checkpoint", "lora", "controlnet", "instantid", "ipadapter", "vae", "diffusers_unet",
                  "upscaler", "grounding_dino_hf", "grounding_dino", "clip", "clip_vision", "clip_text",
                  "textual_inversion"}


def test_every_engine_registered_when_the_pack_is_imported():
    assert set(identify.kinds()) == EXPECTED_KINDS


def test_every_place_names_a_real_folder_and_a_real_loader_by_its_display_name():
    folders = {spec.folder for spec in FOLDERS.values()}
    for kind in set(identify.kinds()):
        place = identify.place(kind)
        if place is None:
            continue
        assert place.folder in folders, (kind, place.folder)
        assert place.loader in PACK.NODE_CLASS_MAPPINGS, (kind, place.loader)
        assert PACK.NODE_DISPLAY_NAME_MAPPINGS[place.loader] in identify.goes(kind)


def _first(models_dir: Path, pattern: str) -> Path:
    found = sorted(models_dir.glob(pattern))
    assert found, f"no fixture file {pattern} under {models_dir}"
    return found[0]


# (fixture file, the loader whose display name the answer must carry, or words the answer must have)
CASES = [
    ("sams/tiny_sam_vit.safetensors", "VisionKitSAMLoader"),
    ("loras/*.safetensors", "VisionKitLoraLoader"),
    ("controlnet/*.safetensors", "VisionKitControlNetLoader"),
    ("ipadapter/*.safetensors", "VisionKitIPAdapterLoader"),
    ("upscale_models/*.pth", "VisionKitUpscaleModelLoader"),
    ("checkpoints/*.safetensors", "VisionKitPipelineLoader"),
    ("clip_vision/*.safetensors", "VisionKitIPAdapterLoader"),
]


@pytest.mark.parametrize("pattern,loader", CASES, ids=[c[0].split("/")[0] for c in CASES])
def test_each_fixture_file_is_recognised_as_its_own_kind(models_dir, pattern, loader):
    path = _first(models_dir, pattern)
    answer = identify.what_is(load_state_dict(str(path)))
    assert PACK.NODE_DISPLAY_NAME_MAPPINGS[loader] in answer, (path.name, answer)


def test_instantid_adapter_is_told_from_an_ip_adapter_by_its_face_embedding_width():
    """InstantID's ip-adapter.bin has IP-Adapter's layout; its resampler reads 512-d face embeddings (InsightFace
    antelopev2), where an IP-Adapter Plus resampler reads CLIP vision features (1280 / 1664). Real shapes, on the
    meta device (the tiny fixture's widths are not InstantID's)."""
    import torch

    def adapter(width):
        with torch.device("meta"):
            return {"image_proj.latents": torch.empty(1, 16, 1280), "image_proj.proj_in.weight": torch.empty(1280, width),
                    "image_proj.layers.0.0.norm1.weight": torch.empty(1280),
                    "ip_adapter.1.to_k_ip.weight": torch.empty(640, 2048)}

    assert PACK.NODE_DISPLAY_NAME_MAPPINGS["VisionKitInstantIDLoader"] in identify.what_is(adapter(512))
    assert PACK.NODE_DISPLAY_NAME_MAPPINGS["VisionKitIPAdapterLoader"] in identify.what_is(adapter(1280))


def test_exclude_drops_the_callers_own_kind(models_dir):
    sd = load_state_dict(str(_first(models_dir, "sams/tiny_sam_vit.safetensors")))
    assert "SAM" in identify.what_is(sd)
    assert "SAM (segment-anything)" not in identify.what_is(sd, exclude="sam")


def test_the_sam_loader_and_the_registry_share_one_rule_set(models_dir):
    """HQ-SAM / SAM 2 were once told apart twice (identify and the SAM loader); now both use sam_family."""
    from visionkit_pack.models.perception import sam

    sd = load_state_dict(str(_first(models_dir, "sams/tiny_sam_vit.safetensors")))
    hq = dict(sd, **{"mask_decoder.hf_token.weight": next(iter(sd.values()))})
    assert sam.sam_family(list(hq)) == "hq_sam"
    assert "HQ-SAM" in identify.what_is(hq)
    with pytest.raises(sam.SamModelError, match="HQ-SAM"):
        sam.detect_arch(hq, "hq.pth")


def test_an_unknown_or_broken_state_dict_never_raises():
    class Broken(dict):
        def __iter__(self):
            raise RuntimeError("unreadable")

    assert identify.what_is({"foo.weight": 1, "bar.bias": 2}).startswith("an unknown model (first keys: foo.weight")
    assert identify.what_is(Broken()) == "an unreadable model"


def test_a_describer_that_fails_is_skipped_not_fatal(monkeypatch):
    def explode(sd, keys):
        raise KeyError("boom")

    monkeypatch.setattr(identify, "_DESCRIBERS", [identify.Describer("x", explode, 0), *identify._DESCRIBERS])
    assert "LoRA" in identify.what_is({"lora_unet_down_blocks_0.lora_down.weight": 0})
