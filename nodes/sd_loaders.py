"""The pipeline loader: an SD1.5 / SDXL single-file checkpoint or diffusers folder → VK_PIPELINE.

One model dropdown lists both kinds, as "checkpoints/<file>" and "diffusers/<folder>"; a bare name (as
core ComfyUI loaders write them) is looked up in checkpoints, then diffusers. The work is in
models/sd/pipeline.py.
"""
from __future__ import annotations

from ..models.core import folders
from ..models.sd.pipeline import DTYPES, load_pipeline
from ..models.sd.types import PIPELINE_TYPE
from .common import CATEGORY, file_fingerprint

SOURCES = ("checkpoints", "diffusers")
FROM_CHECKPOINT = "(from checkpoint)"


def pipeline_names() -> list[str]:
    return [f"{key}/{n}" for key in SOURCES for n in folders.list_models(key)]


def split_name(model_name: str) -> tuple[str, str]:
    """(folder key, name inside it) of a model_name; a bare name is looked up in checkpoints, then diffusers."""
    n = folders.check_name(model_name)
    key, _, rest = n.partition("/")
    if key in SOURCES and rest:
        return key, rest
    for key in SOURCES:
        if n in folders.list_models(key):
            return key, n
    raise folders.ModelNotFoundError(
        f"model {model_name!r} is neither a checkpoint nor a diffusers folder VisionKit can see. Found: "
        f"{', '.join(pipeline_names()[:20]) or 'nothing'}. Put an SD1.5 / SDXL checkpoint (.safetensors) in "
        f"{(folders.folder_paths_for('checkpoints') or ['models/checkpoints'])[0]} or a diffusers folder (with "
        f"model_index.json) in {(folders.folder_paths_for('diffusers') or ['models/diffusers'])[0]}, then refresh "
        "the page.")


def resolve_pipeline(model_name: str) -> str:
    key, name = split_name(model_name)
    return folders.resolve(key, name)


class VisionKitPipelineLoader:
    DESCRIPTION = ("Loads a Stable Diffusion 1.5 or SDXL pipeline: a single-file checkpoint (.safetensors; .ckpt only "
                   "when it holds plain tensors) from models/checkpoints, or a diffusers folder from models/diffusers. "
                   "The architecture (SD1.5 / SDXL, inpainting) is read from the weights; everything is loaded offline "
                   "with configs shipped in the pack. Components are shared with every other node using the same file.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The pipeline (UNet, VAE, text encoders, tokenizers, scheduler config, architecture), for "
                       "Prompt Encode, LoRA / ControlNet loaders and the sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        ck = (folders.folder_paths_for("checkpoints") or ["models/checkpoints"])[0]
        df = (folders.folder_paths_for("diffusers") or ["models/diffusers"])[0]
        return {"required": {
            "model_name": (pipeline_names(), {"tooltip": f"An SD1.5 or SDXL model: 'checkpoints/…' are single files "
                                                         f"in {ck}, 'diffusers/…' are diffusers folders (with "
                                                         f"model_index.json) in {df}."}),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": "Weights' precision. auto: fp16 on CUDA, fp32 on "
                                                                  "CPU. bf16 needs a GPU that supports it."}),
            "vae_name": ([FROM_CHECKPOINT] + folders.list_models("vae"),
                         {"default": FROM_CHECKPOINT, "tooltip": "Use another VAE (from models/vae: a .safetensors "
                                                                 "file or a diffusers VAE folder) instead of the "
                                                                 "pipeline's own."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        # Only model_name is named: it takes bare names too (as core ComfyUI loaders write them), which ComfyUI's
        # list check would refuse, and a missing model gets the pack's message (where to put it). ComfyUI gives
        # a VALIDATE_INPUTS message to every input it names, so dtype and vae_name are left to ComfyUI's own
        # list check at /prompt; load() resolves the VAE again with the pack's message.
        if model_name is None:  # linked: checked when the node runs
            return True
        try:
            resolve_pipeline(model_name)
        except (folders.ModelNotFoundError, folders.UnsafeModelNameError) as ex:
            return str(ex)
        return True

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto", vae_name=FROM_CHECKPOINT):
        try:
            key, name = split_name(model_name)
        except Exception:
            return "missing"
        vae = file_fingerprint("vae", vae_name) if vae_name != FROM_CHECKPOINT else ""
        return f"{file_fingerprint(key, name)}|{vae}"

    def load(self, model_name: str, dtype: str = "auto", vae_name: str = FROM_CHECKPOINT):
        path = resolve_pipeline(model_name)
        vae_path = folders.resolve("vae", vae_name) if vae_name and vae_name != FROM_CHECKPOINT else None
        return (load_pipeline(path, dtype, vae_path, name=model_name),)
