"""The shipped workflows in tests: where they are, and the tiny models standing in for the real ones.

The shipped files name the real models of the README table (v1-5-pruned-emaonly.safetensors, sam_vit_b_01ec64.pth,
…). Tests run them unchanged: `link_real_names(dest_root, models_dir)` makes a models root whose files carry the
real names and link to the tiny fixtures (ALIASES), which is then searched next to the tiny models root
(VISIONKIT_MODELS_DIR="tiny:aliases" in T1; the server's own models folder in T2/T3). Only values that cost
time on a CPU (image sizes) are lowered, by `for_tests`.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from . import ROOT

WORKFLOWS_DIR = ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
INPUTS_DIR = WORKFLOWS_DIR / "inputs"

# (folder, real name from the README table) -> tiny fixture (tests/vk_testing/tiny_*.py) in the same folder
ALIASES: dict[tuple[str, str], str] = {
    ("checkpoints", "v1-5-pruned-emaonly.safetensors"): "tiny-sd15.safetensors",
    ("checkpoints", "sd_xl_base_1.0.safetensors"): "tiny-sdxl.safetensors",
    ("loras", "lcm-lora-sdv1-5.safetensors"): "for-tiny-sd15.safetensors",
    ("loras", "lcm-lora-sdxl.safetensors"): "for-tiny-sdxl.safetensors",
    ("controlnet", "control_v11p_sd15_canny_fp16.safetensors"): "for-tiny-sd15-ldm.safetensors",
    ("controlnet", "control_v11p_sd15_openpose_fp16.safetensors"): "for-tiny-sd15-ldm.safetensors",
    ("upscale_models", "RealESRGAN_x4plus.pth"): "tiny_RealESRGAN_x4plus.pth",
    ("sams", "sam_vit_b_01ec64.pth"): "tiny_sam_vit.pth",
    ("grounding-dino", "grounding-dino-tiny"): "tiny-grounding-dino",
    ("clip_models", "clip-vit-base-patch32"): "tiny-clip",
    ("ipadapter", "ip-adapter_sd15.safetensors"): "tiny-ip-adapter_sd15.safetensors",
    ("clip_vision", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"): "tiny-clip-vision.safetensors",
    ("instantid", "ip-adapter.bin"): "tiny-instantid.bin",
    ("controlnet", "instantid"): "tiny-sdxl-identitynet",
    ("insightface/models", "antelopev2"): "tiny_antelope",
    # issue 20: captions, image similarity (tests/vk_testing/tiny_vision.py)
    ("blip", "blip-image-captioning-base"): "tiny-blip",
    ("dinov2", "dinov2-base"): "tiny-dinov2",
    ("vit", "vit-base-patch16-224"): "tiny-vit",
    # issue 20: pose and depth
    ("pose", "vitpose-base-simple"): "tiny-vitpose",
    ("depth", "Depth-Anything-V2-Small-hf"): "tiny-depth-anything",
    ("controlnet", "control_v11f1p_sd15_depth_fp16.safetensors"): "for-tiny-sd15-ldm.safetensors",
}

# Text-to-image sizes are divided by this in tests (512 px on the tiny SD1.5 UNet takes 7 s on CPU, 64 px 0.2 s)
SIZE_DIVISOR = 8
# Segment everything's point grid per side is divided by this (SAM decodes every prompt at 1024 px even with the
# tiny encoder: the shipped 32×32 grid takes minutes on a CPU, 2×2 a few seconds)
POINTS_DIVISOR = 16


def names() -> list[str]:
    """The shipped workflows (UI files in workflows/, the API twin of each in workflows/api/)."""
    return sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))


def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text(encoding="utf-8"))


def link_real_names(dest_root: Path, models_dir: Path, copy_files: bool = False) -> Path:
    """dest_root/<folder>/<real name> → models_dir/<folder>/<tiny name> for every alias (each fixture must exist:
    a missing one would only show later as a workflow that cannot find its model)."""
    dest_root = Path(dest_root)
    for (folder, real), tiny in ALIASES.items():
        src = Path(models_dir) / folder / tiny
        if not src.exists():
            raise FileNotFoundError(f"the tiny fixture {folder}/{tiny} (for {real}) was not built in {models_dir}; "
                                    "see tests/vk_testing/tiny_*.py")
        dst = dest_root / folder / real
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            continue
        if copy_files:
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
        else:
            os.symlink(src, dst, target_is_directory=src.is_dir())
    return dest_root


def model_inputs(api: dict) -> list[tuple[str, str, str]]:
    """(node id, input, value) of every model-name input of an API workflow (the loaders' '*_name' widgets)."""
    return [(nid, k, v) for nid, node in api.items() for k, v in node["inputs"].items()
            if k.endswith("_name") and isinstance(v, str) and node["class_type"].startswith("VisionKit")
            and "Loader" in node["class_type"] and not v.startswith("(")]


def for_tests(api: dict) -> dict:
    """The API workflow with the text-to-image sizes lowered (SIZE_DIVISOR) and segment everything's point grid
    coarser (POINTS_DIVISOR), everything else as shipped."""
    api = copy.deepcopy(api)
    for node in api.values():
        if node["class_type"] == "VisionKitLCMSampler" and "image" not in node["inputs"]:
            for k in ("width", "height"):
                node["inputs"][k] = max(64, node["inputs"][k] // SIZE_DIVISOR // 8 * 8)
        if node["class_type"] == "VisionKitSAMSegmentEverything":  # issue 20
            node["inputs"]["points_per_side"] = max(2, node["inputs"]["points_per_side"] // POINTS_DIVISOR)
    return api


def copy_inputs(dest: Path) -> list[str]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(INPUTS_DIR.glob("*.png")):
        shutil.copyfile(p, dest / p.name)
        out.append(p.name)
    return out


# ---------------------------------------------------------------- T1 stand-ins for core nodes the workflows use
class MaskToImage:
    """ComfyUI's MaskToImage: a MASK (B, H, W) as a gray IMAGE (B, H, W, 3)."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK", {})}}

    def run(self, mask):
        m = mask if mask.ndim == 3 else mask.reshape(-1, *mask.shape[-2:])
        return (m.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous(),)


class ImageCompositeMasked:
    """ComfyUI's ImageCompositeMasked for what the workflows use: source pasted at (0, 0) onto a destination of
    the same size through a mask of that size: destination * (1 - mask) + source * mask. Anything else is an
    error here (the real node runs in T2)."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": ("IMAGE", {}), "source": ("IMAGE", {}), "x": ("INT", {"min": 0}),
                             "y": ("INT", {"min": 0}), "resize_source": ("BOOLEAN", {})},
                "optional": {"mask": ("MASK", {})}}

    def run(self, destination, source, x, y, resize_source, mask=None):
        from .runner import WorkflowError

        if (x, y) != (0, 0) or resize_source or destination.shape[1:3] != source.shape[1:3]:
            raise WorkflowError("the ImageCompositeMasked stand-in only pastes a same-size source at (0, 0)")
        if mask is None:
            return (source.clone(),)
        m = mask if mask.ndim == 3 else mask.reshape(-1, *mask.shape[-2:])
        if m.shape[-2:] != destination.shape[1:3]:
            raise WorkflowError("the ImageCompositeMasked stand-in needs a mask of the image's size")
        m = m.unsqueeze(-1).clamp(0, 1)
        return (destination[..., :3] * (1 - m) + source[..., :3] * m,)


CORE_STAND_INS = {"MaskToImage": MaskToImage, "ImageCompositeMasked": ImageCompositeMasked}
