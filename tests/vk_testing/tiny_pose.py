"""Tiny ViTPose fixture: a transformers `VitPoseForPoseEstimation` folder in the layout of
usyd-community/vitpose-base-simple (config.json + model.safetensors + preprocessor_config.json, what
`save_pretrained` writes), with a 2-layer 32-wide backbone on a 64×48 input (the real one: 12 layers, 768 wide,
256×192). Random seeded weights, perturbed so the heatmaps (and so keypoints and scores) differ from point to
point and from person to person.
"""
from __future__ import annotations

from pathlib import Path

from .tiny_models import _perturb, _seeded, builder

COCO_LABELS = ("Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow",
               "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle")
INPUT_SIZE = {"height": 64, "width": 48}


def tiny_config(**backbone):
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    bb = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              image_size=[INPUT_SIZE["height"], INPUT_SIZE["width"]], patch_size=[16, 16])
    bb.update(backbone)
    return VitPoseConfig(backbone_config=VitPoseBackboneConfig(**bb), num_labels=len(COCO_LABELS),
                         id2label=dict(enumerate(COCO_LABELS)), label2id={n: i for i, n in enumerate(COCO_LABELS)})


def tiny_vitpose(seed: int = 20):
    from transformers import VitPoseForPoseEstimation

    _seeded(seed)
    model = VitPoseForPoseEstimation(tiny_config()).eval()
    _perturb(model, 0.05)
    return model


def save_folder(model, folder: Path) -> None:
    from transformers import VitPoseImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    VitPoseImageProcessor(size=dict(INPUT_SIZE)).save_pretrained(str(folder))


@builder
def pose(root: Path) -> None:
    save_folder(tiny_vitpose(), root / "pose" / "tiny-vitpose")
