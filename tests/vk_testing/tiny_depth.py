"""Tiny depth fixtures: transformers folders in the layout of depth-anything/Depth-Anything-V2-Small-hf and of a
DPT (MiDaS) depth model (config.json + model.safetensors + preprocessor_config.json, what `save_pretrained`
writes).

- `depth/tiny-depth-anything/`: `DepthAnythingForDepthEstimation` on a 4-layer, 32-wide DINOv2 backbone (the
  Small one: 12 layers, 384 wide), its processor at 56 px (the real one: 518), keeping the aspect ratio with
  sides a multiple of 14, bicubic, as the real preprocessor_config.json;
- `depth/tiny-dpt/`: `DPTForDepthEstimation` with a 4-layer, 32-wide ViT at 32 px.
Random seeded weights, perturbed so the depth varies across the image.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .tiny_models import _perturb, _seeded, builder


def tiny_depth_anything_config():
    from transformers import DepthAnythingConfig, Dinov2Config

    return DepthAnythingConfig(
        backbone_config=Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                     image_size=56, patch_size=14, out_indices=[1, 2, 3, 4],
                                     reshape_hidden_states=False),
        reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)


def tiny_depth_anything(seed: int = 21):
    from transformers import DepthAnythingForDepthEstimation

    _seeded(seed)
    model = DepthAnythingForDepthEstimation(tiny_depth_anything_config()).eval()
    _perturb(model, 0.05)
    return model


def tiny_dpt(seed: int = 22):
    from transformers import DPTConfig, DPTForDepthEstimation

    _seeded(seed)
    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                    fusion_hidden_size=16, head_in_index=-1)
    model = DPTForDepthEstimation(cfg).eval()
    _perturb(model, 0.05)
    with torch.no_grad():  # the head ends in a ReLU: lift its last conv so random weights give a varied map
        last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.fill_(0.5)
    return model


def save_folder(model, folder: Path, **processor) -> None:
    from transformers import DPTImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    DPTImageProcessor(**processor).save_pretrained(str(folder))


@builder
def depth(root: Path) -> None:
    d = root / "depth"
    save_folder(tiny_depth_anything(), d / "tiny-depth-anything", size={"height": 56, "width": 56},
                keep_aspect_ratio=True, ensure_multiple_of=14, resample=3, do_pad=False)
    save_folder(tiny_dpt(), d / "tiny-dpt", size={"height": 32, "width": 32})
