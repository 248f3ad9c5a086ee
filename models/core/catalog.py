"""The models the README's table names: file, folder, source and licence (data only, no network).

`scripts/doctor` reports which of them are present; the downloader (its own issue) adds URLs and
checksums from published sources. tests/test_doctor.py keeps this list and the README table in step.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogModel:
    name: str  # short id
    file: str  # file (or folder) name inside its folder
    folder: str  # folder key (models/core/folders.py)
    used_by: str
    source: str
    licence: str
    non_commercial: bool = False


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("sd15", "v1-5-pruned-emaonly.safetensors", "checkpoints", "pipeline loader",
                 "stable-diffusion-v1-5/stable-diffusion-v1-5", "CreativeML OpenRAIL-M"),
    CatalogModel("sdxl", "sd_xl_base_1.0.safetensors", "checkpoints", "pipeline loader",
                 "stabilityai/stable-diffusion-xl-base-1.0", "CreativeML OpenRAIL++-M"),
    CatalogModel("sd15-inpaint", "sd-v1-5-inpainting.safetensors", "checkpoints", "inpaint workflows",
                 "stable-diffusion-v1-5/stable-diffusion-inpainting", "CreativeML OpenRAIL-M"),
    CatalogModel("lcm-lora-sd15", "lcm-lora-sdv1-5.safetensors", "loras", "4–8 step sampling",
                 "latent-consistency/lcm-lora-sdv1-5", "OpenRAIL++"),
    CatalogModel("lcm-lora-sdxl", "lcm-lora-sdxl.safetensors", "loras", "4–8 step sampling",
                 "latent-consistency/lcm-lora-sdxl", "OpenRAIL++"),
    CatalogModel("controlnet-canny-sd15", "control_v11p_sd15_canny.safetensors", "controlnet", "edge control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL"),
    CatalogModel("controlnet-openpose-sd15", "control_v11p_sd15_openpose.safetensors", "controlnet", "pose control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL"),
    CatalogModel("ipadapter-sd15", "ip-adapter_sd15.safetensors", "ipadapter", "style transfer", "h94/IP-Adapter",
                 "Apache-2.0"),
    CatalogModel("ipadapter-plus-sd15", "ip-adapter-plus_sd15.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0"),
    CatalogModel("ipadapter-sdxl", "ip-adapter_sdxl_vit-h.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0"),
    CatalogModel("ipadapter-plus-sdxl", "ip-adapter-plus_sdxl_vit-h.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0"),
    CatalogModel("clip-vision-h", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision", "IP-Adapter",
                 "h94/IP-Adapter", "MIT"),
    CatalogModel("clip-b32", "clip-vit-base-patch32", "clip_models", "zero-shot ranking",
                 "openai/clip-vit-base-patch32", "MIT"),
    CatalogModel("sam-b", "sam_vit_b_01ec64.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0"),
    CatalogModel("sam-l", "sam_vit_l_0b3195.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0"),
    CatalogModel("sam-h", "sam_vit_h_4b8939.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0"),
    CatalogModel("grounding-dino-t", "groundingdino_swint_ogc.pth", "grounding-dino", "text → boxes",
                 "IDEA-Research/GroundingDINO", "Apache-2.0"),
    CatalogModel("grounding-dino-tiny-hf", "grounding-dino-tiny", "grounding-dino", "text → boxes",
                 "IDEA-Research/grounding-dino-tiny", "Apache-2.0"),
    CatalogModel("antelopev2", "antelopev2", "insightface", "face analysis, InstantID", "deepinsight/insightface",
                 "non-commercial research only", True),
    CatalogModel("buffalo_l", "buffalo_l", "insightface", "face analysis", "deepinsight/insightface",
                 "non-commercial research only", True),
    CatalogModel("instantid", "ip-adapter.bin", "instantid", "identity portraits", "InstantX/InstantID",
                 "Apache-2.0 weights, built on antelopev2: treat as non-commercial", True),
    CatalogModel("instantid-controlnet", "instantid", "controlnet", "identity portraits", "InstantX/InstantID",
                 "as InstantID", True),
    CatalogModel("realesrgan-x4plus", "RealESRGAN_x4plus.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause"),
    CatalogModel("realesrgan-x2plus", "RealESRGAN_x2plus.pth", "upscale_models", "upscaling", "xinntao/Real-ESRGAN",
                 "BSD-3-Clause"),
    CatalogModel("realesrgan-anime", "RealESRGAN_x4plus_anime_6B.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause"),
    CatalogModel("realesr-general-v3", "realesr-general-x4v3.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause"),
    CatalogModel("realesr-animevideo-v3", "realesr-animevideov3.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause"),
    # issue 20: captions, image similarity, image labels (transformers folders)
    CatalogModel("blip-base", "blip-image-captioning-base", "blip", "captions",
                 "Salesforce/blip-image-captioning-base", "BSD-3-Clause"),
    CatalogModel("blip-large", "blip-image-captioning-large", "blip", "captions",
                 "Salesforce/blip-image-captioning-large", "BSD-3-Clause"),
    CatalogModel("dinov2-small", "dinov2-small", "dinov2", "image similarity", "facebook/dinov2-small", "Apache-2.0"),
    CatalogModel("dinov2-base", "dinov2-base", "dinov2", "image similarity", "facebook/dinov2-base", "Apache-2.0"),
    CatalogModel("vit-base", "vit-base-patch16-224", "vit", "image labels", "google/vit-base-patch16-224",
                 "Apache-2.0"),
    # issue 20: pose and depth (transformers folders) and the depth ControlNet of the depth workflow
    CatalogModel("controlnet-depth-sd15", "control_v11f1p_sd15_depth.safetensors", "controlnet", "depth control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL"),
    CatalogModel("vitpose-base", "vitpose-base-simple", "pose", "pose from a photo", "usyd-community/vitpose-base-simple",
                 "Apache-2.0"),
    CatalogModel("depth-anything-v2-small", "Depth-Anything-V2-Small-hf", "depth", "depth map",
                 "depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0"),
)


def by_folder(key: str) -> list[CatalogModel]:
    return [m for m in CATALOG if m.folder == key]
