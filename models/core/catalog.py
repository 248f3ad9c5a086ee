"""The model catalogue, the one table of the models the pack knows: for each, the file the README's table and
the workflows name, its folder, what uses it, its source and licence, and where the opt-in downloader
(`scripts/models`, tools/downloader.py) fetches it from: URLs, sizes and, only where a published source gives
one, sha256. Data only, standard library only, no network: the pack reads it (README table, the models route,
workflows' properties.models) and so does the downloader, which runs without torch or ComfyUI.

Checksums (the rule): a sha256 is written here only when a published page gives it, and `sha256_source`
cites that page. Where none was found the file has `sha256=None` and the downloader says "unverified"
when it fetches it. Sources used:

- OpenModelDB (the upscaler model database): `resources[].sha256` / `size` of its Real-ESRGAN records,
  read at commit 782aac0 of github.com/OpenModelDB/open-model-database.
- micro-sam (computational-cell-analytics), `micro_sam/util.py` at 3ee3dae: the sha256 registry it
  verifies Meta's SAM checkpoints with when it downloads them from dl.fbaipublicfiles.com.
- SwarmUI (mcmonkeyprojects), at 062407c: the sha256 it checks its Hugging Face downloads of SDXL base,
  the IP-Adapter weights and the ViT-H image encoder against (src/Text2Image/CommonModels.cs,
  src/BuiltinExtensions/ComfyUIBackend/WorkflowGeneratorSteps.cs).
- Hugging Face file pages (`.../blob/main/<file>`) publish the Git-LFS sha256 and size of every large
  file. For SD 1.5 and the Grounding DINO checkpoint the value here is that LFS sha256; it was read, with
  the same size and the same URL, in several independent public download scripts (the HF page itself
  was not reachable from where this manifest was written), and the cited page is where to re-check it.

Sizes are informative (progress, disk space); only the sha256 decides whether a file is accepted.
"""
from __future__ import annotations

from dataclasses import dataclass

HF = "https://huggingface.co"
GH_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
OMDB = "https://github.com/OpenModelDB/open-model-database/blob/782aac088bd83dd3fc438a42eb0c3868dc559110/data/models"
MICROSAM = ("https://github.com/computational-cell-analytics/micro-sam/blob/"
            "3ee3dae1780c3db4af196cf9eeb7823e3aace019/micro_sam/util.py#L103-L108")
SWARM = "https://github.com/mcmonkeyprojects/SwarmUI/blob/062407c7bb488fc76ac61044cb929f0d0a30e60f/src"
# ControlNet 1.1 for SD1.5: lllyasviel released .pth files; ComfyUI's author publishes them as fp16 .safetensors
# under the same names + "_fp16". The workflows name those: a .safetensors file is what every ComfyUI frontend's
# Missing Models panel offers to download (frontend 1.27 accepts only .safetensors / .sft there).
CN_FP16 = "comfyanonymous/ControlNet-v1-1_fp16_safetensors"
CN_FP16_NOTE = ("fp16 .safetensors of the original release (lllyasviel/ControlNet-v1-1, .pth), published by "
                "ComfyUI's author; the original .pth loads too")
SWARM_STEPS = f"{SWARM}/BuiltinExtensions/ComfyUIBackend/WorkflowGeneratorSteps.cs"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    path: str  # where it lands, relative to the model folder ('/' separated; sub-folders allowed)
    size: int | None = None  # bytes, when known
    sha256: str | None = None  # only from a published source (sha256_source); None = unverified
    sha256_source: str | None = None
    archive: str = ""  # "zip": `path` is the folder the archive's content is unpacked into

    @property
    def verified(self) -> bool:
        return bool(self.sha256)


@dataclass(frozen=True)
class CatalogModel:
    name: str  # short id (the downloader's name for it)
    file: str  # file (or folder) name inside its folder, as the README table and the workflows name it
    folder: str  # folder key (models/core/folders.py)
    used_by: str
    source: str
    licence: str
    non_commercial: bool = False
    files: tuple[RemoteFile, ...] = ()  # what the downloader fetches; paths relative to the model folder
    target: str = ""  # the name the download gives in that folder, when it differs from `file` ("" = file)
    page: str = ""  # the model's own page (licence text, model card)
    note: str = ""

    def __post_init__(self):
        if not self.target:
            object.__setattr__(self, "target", self.file)

    @property
    def verification(self) -> str:
        """'verified' (every file has a published sha256), 'partly verified' or 'unverified'."""
        n = sum(f.verified for f in self.files)
        return "verified" if n == len(self.files) else ("partly verified" if n else "unverified")

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)


def _hf(repo: str, file: str, path: str | None = None, size: int | None = None, sha256: str | None = None,
        source: str | None = None, rev: str = "main") -> RemoteFile:
    """A file of a Hugging Face repository; a sha256 without an explicit source cites its HF file page."""
    if sha256 and source is None:
        source = f"{HF}/{repo}/blob/{rev}/{file}"
    return RemoteFile(f"{HF}/{repo}/resolve/{rev}/{file}", path or file.rsplit("/", 1)[-1], size, sha256, source)


def _esrgan(tag: str, file: str, size: int, sha256: str, omdb: str) -> RemoteFile:
    return RemoteFile(f"{GH_ESRGAN}/{tag}/{file}", file, size, sha256, f"{OMDB}/{omdb}.json")


def _sam(file: str, size: int, sha256: str) -> RemoteFile:
    return RemoteFile(f"https://dl.fbaipublicfiles.com/segment_anything/{file}", file, size, sha256, MICROSAM)


_OPENRAIL_NOTE = "read the licence on the model page before use"
_INSIGHTFACE = ("InsightFace's pretrained models are for non-commercial research only "
                "(github.com/deepinsight/insightface#license)")

CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("sd15", "v1-5-pruned-emaonly.safetensors", "checkpoints", "pipeline loader",
                 "stable-diffusion-v1-5/stable-diffusion-v1-5", "CreativeML OpenRAIL-M", files=(
        _hf("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors", size=4265146304,
            sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"),),
        page=f"{HF}/stable-diffusion-v1-5/stable-diffusion-v1-5",
        note=_OPENRAIL_NOTE),
    CatalogModel("sdxl", "sd_xl_base_1.0.safetensors", "checkpoints", "pipeline loader",
                 "stabilityai/stable-diffusion-xl-base-1.0", "CreativeML OpenRAIL++-M", files=(
        _hf("stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors", size=6938078334,
            sha256="31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
            source=f"{SWARM}/Text2Image/CommonModels.cs#L72"),),
        page=f"{HF}/stabilityai/stable-diffusion-xl-base-1.0",
        note=_OPENRAIL_NOTE),
    CatalogModel("sd15-inpaint", "sd-v1-5-inpainting.safetensors", "checkpoints", "inpaint workflows",
                 "stable-diffusion-v1-5/stable-diffusion-inpainting", "CreativeML OpenRAIL-M", files=(
        _hf("stable-diffusion-v1-5/stable-diffusion-inpainting", "sd-v1-5-inpainting.ckpt"),),
        target="sd-v1-5-inpainting.ckpt",
        page=f"{HF}/stable-diffusion-v1-5/stable-diffusion-inpainting",
        note="the original .ckpt (the pipeline loader reads it when it holds plain tensors); the README's "
             ".safetensors name is a conversion of the same weights"),
    CatalogModel("lcm-lora-sd15", "lcm-lora-sdv1-5.safetensors", "loras", "4–8 step sampling",
                 "latent-consistency/lcm-lora-sdv1-5", "OpenRAIL++", files=(
        _hf("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors", "lcm-lora-sdv1-5.safetensors"),),
        page=f"{HF}/latent-consistency/lcm-lora-sdv1-5"),
    CatalogModel("lcm-lora-sdxl", "lcm-lora-sdxl.safetensors", "loras", "4–8 step sampling",
                 "latent-consistency/lcm-lora-sdxl", "OpenRAIL++", files=(
        _hf("latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors", "lcm-lora-sdxl.safetensors"),),
        page=f"{HF}/latent-consistency/lcm-lora-sdxl"),
    CatalogModel("controlnet-canny-sd15", "control_v11p_sd15_canny_fp16.safetensors", "controlnet", "edge control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL", files=(
        _hf(CN_FP16, "control_v11p_sd15_canny_fp16.safetensors"),),
        page=f"{HF}/lllyasviel/ControlNet-v1-1",
        note=CN_FP16_NOTE),
    CatalogModel("controlnet-openpose-sd15", "control_v11p_sd15_openpose_fp16.safetensors", "controlnet", "pose control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL", files=(
        _hf(CN_FP16, "control_v11p_sd15_openpose_fp16.safetensors"),),
        page=f"{HF}/lllyasviel/ControlNet-v1-1",
        note=CN_FP16_NOTE),
    CatalogModel("ipadapter-sd15", "ip-adapter_sd15.safetensors", "ipadapter", "style transfer", "h94/IP-Adapter",
                 "Apache-2.0", files=(
        _hf("h94/IP-Adapter", "models/ip-adapter_sd15.safetensors",
            sha256="289b45f16d043d0bf542e45831f971dcdaabe18b656f11e86d9dfba7e9ee3369", source=f"{SWARM_STEPS}#L821"),),
        page=f"{HF}/h94/IP-Adapter"),
    CatalogModel("ipadapter-plus-sd15", "ip-adapter-plus_sd15.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0", files=(
        _hf("h94/IP-Adapter", "models/ip-adapter-plus_sd15.safetensors",
            sha256="a1c250be40455cc61a43da1201ec3f1edaea71214865fb47f57927e06cbe4996", source=f"{SWARM_STEPS}#L831"),),
        page=f"{HF}/h94/IP-Adapter"),
    CatalogModel("ipadapter-sdxl", "ip-adapter_sdxl_vit-h.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0", files=(
        _hf("h94/IP-Adapter", "sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
            sha256="ebf05d918348aec7abb02a5e9ecef77e0aaea6914a5c4ea13f50d45eb1681831", source=f"{SWARM_STEPS}#L820"),),
        page=f"{HF}/h94/IP-Adapter"),
    CatalogModel("ipadapter-plus-sdxl", "ip-adapter-plus_sdxl_vit-h.safetensors", "ipadapter", "style transfer",
                 "h94/IP-Adapter", "Apache-2.0", files=(
        _hf("h94/IP-Adapter", "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors", size=847517512,
            sha256="3f5062b8400c94b7159665b21ba5c62acdcd7682262743d7f2aefedef00e6581", source=f"{SWARM_STEPS}#L830"),),
        page=f"{HF}/h94/IP-Adapter"),
    CatalogModel("clip-vision-h", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision", "IP-Adapter",
                 "h94/IP-Adapter", "MIT", files=(
        _hf("h94/IP-Adapter", "models/image_encoder/model.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
            size=2528373448, sha256="6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030",
            source=f"{SWARM_STEPS}#L769"),),
        page=f"{HF}/h94/IP-Adapter"),
    CatalogModel("clip-b32", "clip-vit-base-patch32", "clip_models", "zero-shot ranking",
                 "openai/clip-vit-base-patch32", "MIT", files=tuple(
        _hf("openai/clip-vit-base-patch32", f, f"clip-vit-base-patch32/{f}")
        for f in ("config.json", "pytorch_model.bin", "preprocessor_config.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")),
        page=f"{HF}/openai/clip-vit-base-patch32",
        note="a transformers CLIPModel folder"),
    CatalogModel("sam-b", "sam_vit_b_01ec64.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0", files=(
        _sam("sam_vit_b_01ec64.pth", 375042383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),),
        page="https://github.com/facebookresearch/segment-anything#model-checkpoints"),
    CatalogModel("sam-l", "sam_vit_l_0b3195.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0", files=(
        _sam("sam_vit_l_0b3195.pth", 1249524607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),),
        page="https://github.com/facebookresearch/segment-anything#model-checkpoints"),
    CatalogModel("sam-h", "sam_vit_h_4b8939.pth", "sams", "segmentation", "facebookresearch/segment-anything",
                 "Apache-2.0", files=(
        _sam("sam_vit_h_4b8939.pth", 2564550879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),),
        page="https://github.com/facebookresearch/segment-anything#model-checkpoints"),
    CatalogModel("grounding-dino-t", "groundingdino_swint_ogc.pth", "grounding-dino", "text → boxes",
                 "IDEA-Research/GroundingDINO", "Apache-2.0", files=(
        _hf("ShilongLiu/GroundingDINO", "groundingdino_swint_ogc.pth", size=693997677,
            sha256="3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799"),
        _hf("google-bert/bert-base-uncased", "vocab.txt"),
        _hf("google-bert/bert-base-uncased", "tokenizer_config.json")),
        page="https://github.com/IDEA-Research/GroundingDINO",
        note="the original checkpoint with the BERT tokenizer files it needs beside it"),
    CatalogModel("grounding-dino-tiny-hf", "grounding-dino-tiny", "grounding-dino", "text → boxes",
                 "IDEA-Research/grounding-dino-tiny", "Apache-2.0", files=tuple(
        _hf("IDEA-Research/grounding-dino-tiny", f, f"grounding-dino-tiny/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
                  "tokenizer.json", "tokenizer_config.json", "vocab.txt")),
        page=f"{HF}/IDEA-Research/grounding-dino-tiny",
        note="a transformers folder"),
    CatalogModel("antelopev2", "antelopev2", "insightface", "face analysis, InstantID", "deepinsight/insightface",
                 "non-commercial research only", True, files=(
        RemoteFile("https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip", "antelopev2",
                   archive="zip"),),
        page="https://github.com/deepinsight/insightface/tree/master/model_zoo",
        note=_INSIGHTFACE),
    CatalogModel("buffalo_l", "buffalo_l", "insightface", "face analysis", "deepinsight/insightface",
                 "non-commercial research only", True, files=(
        RemoteFile("https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip", "buffalo_l",
                   archive="zip"),),
        page="https://github.com/deepinsight/insightface/tree/master/model_zoo",
        note=_INSIGHTFACE),
    CatalogModel("instantid", "ip-adapter.bin", "instantid", "identity portraits", "InstantX/InstantID",
                 "Apache-2.0 weights, built on antelopev2: treat as non-commercial", True, files=(
        _hf("InstantX/InstantID", "ip-adapter.bin"),),
        page=f"{HF}/InstantX/InstantID",
        note="InstantID needs antelopev2 (non-commercial) for its face embeddings"),
    CatalogModel("instantid-controlnet", "instantid", "controlnet", "identity portraits", "InstantX/InstantID",
                 "as InstantID", True, files=(
        _hf("InstantX/InstantID", "ControlNetModel/config.json", "instantid/config.json"),
        _hf("InstantX/InstantID", "ControlNetModel/diffusion_pytorch_model.safetensors",
            "instantid/diffusion_pytorch_model.safetensors")),
        page=f"{HF}/InstantX/InstantID",
        note="the IdentityNet (a diffusers ControlNet folder)"),
    CatalogModel("realesrgan-x4plus", "RealESRGAN_x4plus.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause", files=(
        _esrgan("v0.1.0", "RealESRGAN_x4plus.pth", 67040989,
                "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", "4x-realesrgan-x4plus"),),
        page="https://github.com/xinntao/Real-ESRGAN"),
    CatalogModel("realesrgan-x2plus", "RealESRGAN_x2plus.pth", "upscale_models", "upscaling", "xinntao/Real-ESRGAN",
                 "BSD-3-Clause", files=(
        _esrgan("v0.2.1", "RealESRGAN_x2plus.pth", 67061725,
                "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", "2x-realesrgan-x2plus"),),
        page="https://github.com/xinntao/Real-ESRGAN"),
    CatalogModel("realesrgan-anime", "RealESRGAN_x4plus_anime_6B.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause", files=(
        _esrgan("v0.2.2.4", "RealESRGAN_x4plus_anime_6B.pth", 17938799,
                "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", "4x-realesrgan-x4plus-anime-6b"),),
        page="https://github.com/xinntao/Real-ESRGAN"),
    CatalogModel("realesr-general-v3", "realesr-general-x4v3.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause", files=(
        _esrgan("v0.2.5.0", "realesr-general-x4v3.pth", 4885111,
                "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", "4x-realesr-general-x4v3"),),
        page="https://github.com/xinntao/Real-ESRGAN"),
    CatalogModel("realesr-animevideo-v3", "realesr-animevideov3.pth", "upscale_models", "upscaling",
                 "xinntao/Real-ESRGAN", "BSD-3-Clause", files=(
        _esrgan("v0.2.5.0", "realesr-animevideov3.pth", 2504012,
                "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d", "4x-realesr-animevideo-v3"),),
        page="https://github.com/xinntao/Real-ESRGAN"),
    CatalogModel("blip-base", "blip-image-captioning-base", "blip", "captions",
                 "Salesforce/blip-image-captioning-base", "BSD-3-Clause", files=tuple(
        _hf("Salesforce/blip-image-captioning-base", f, f"blip-image-captioning-base/{f}")
        for f in ("config.json", "pytorch_model.bin", "preprocessor_config.json", "special_tokens_map.json",
                  "tokenizer.json", "tokenizer_config.json", "vocab.txt")),
        page=f"{HF}/Salesforce/blip-image-captioning-base",
        note="a transformers folder"),
    CatalogModel("blip-large", "blip-image-captioning-large", "blip", "captions",
                 "Salesforce/blip-image-captioning-large", "BSD-3-Clause", files=tuple(
        _hf("Salesforce/blip-image-captioning-large", f, f"blip-image-captioning-large/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
                  "tokenizer.json", "tokenizer_config.json", "vocab.txt")),
        page=f"{HF}/Salesforce/blip-image-captioning-large",
        note="a transformers folder"),
    CatalogModel("dinov2-small", "dinov2-small", "dinov2", "image similarity", "facebook/dinov2-small", "Apache-2.0",
                 files=tuple(
        _hf("facebook/dinov2-small", f, f"dinov2-small/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json")),
        page=f"{HF}/facebook/dinov2-small",
        note="a transformers folder"),
    CatalogModel("dinov2-base", "dinov2-base", "dinov2", "image similarity", "facebook/dinov2-base", "Apache-2.0",
                 files=tuple(
        _hf("facebook/dinov2-base", f, f"dinov2-base/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json")),
        page=f"{HF}/facebook/dinov2-base",
        note="a transformers folder"),
    CatalogModel("vit-base", "vit-base-patch16-224", "vit", "image labels", "google/vit-base-patch16-224",
                 "Apache-2.0", files=tuple(
        _hf("google/vit-base-patch16-224", f, f"vit-base-patch16-224/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json")),
        page=f"{HF}/google/vit-base-patch16-224",
        note="a transformers folder (1000 ImageNet labels)"),
    CatalogModel("controlnet-depth-sd15", "control_v11f1p_sd15_depth_fp16.safetensors", "controlnet", "depth control",
                 "lllyasviel/ControlNet-v1-1", "OpenRAIL", files=(
        _hf(CN_FP16, "control_v11f1p_sd15_depth_fp16.safetensors"),),
        page=f"{HF}/lllyasviel/ControlNet-v1-1",
        note=CN_FP16_NOTE),
    CatalogModel("vitpose-base", "vitpose-base-simple", "pose", "pose from a photo", "usyd-community/vitpose-base-simple",
                 "Apache-2.0", files=tuple(
        _hf("usyd-community/vitpose-base-simple", f, f"vitpose-base-simple/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json")),
        page=f"{HF}/usyd-community/vitpose-base-simple",
        note="a transformers ViTPose folder"),
    CatalogModel("depth-anything-v2-small", "Depth-Anything-V2-Small-hf", "depth", "depth map",
                 "depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", files=tuple(
        _hf("depth-anything/Depth-Anything-V2-Small-hf", f, f"Depth-Anything-V2-Small-hf/{f}")
        for f in ("config.json", "model.safetensors", "preprocessor_config.json")),
        page=f"{HF}/depth-anything/Depth-Anything-V2-Small-hf",
        note="a transformers Depth Anything V2 folder (only the Small model is Apache-2.0; Base/Large are "
             "CC-BY-NC-4.0)"),
)


def by_folder(key: str) -> list[CatalogModel]:
    return [m for m in CATALOG if m.folder == key]


def by_name() -> dict[str, CatalogModel]:
    return {m.name: m for m in CATALOG}
