"""The model folders VisionKit reads, and safe resolution of a model name inside them.

A model name that arrives from a workflow or the HTTP API is untrusted. It is only accepted when it is
one of the names that listing its folders produces (so `..`, absolute paths and anything not in the
folder are refused); the path returned is the folder joined with that listed name, so files and
folders that users symlink into a model folder keep working.
"""
from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass

from . import host
from .errors import VisionKitError

log = logging.getLogger("visionkit")


@dataclass(frozen=True)
class FolderSpec:
    key: str  # the folder_paths key ComfyUI knows it by
    folder: str  # the folder name under ComfyUI/models (or VISIONKIT_MODELS_DIR)
    holds: str  # what goes there, in plain words
    extensions: tuple[str, ...]  # file suffixes listed; empty = none (directories only)
    directories: str = ""  # marker file that makes a sub-folder a model ("" = no folder models)
    subdir: str = ""  # models live in <folder>/<subdir>/ (insightface packs)


PT = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".sft")

FOLDERS: dict[str, FolderSpec] = {
    f.key: f
    for f in (
        FolderSpec("checkpoints", "checkpoints", "SD1.5 / SDXL single-file checkpoints", (".safetensors", ".ckpt", ".sft")),
        FolderSpec("diffusers", "diffusers", "diffusers-format pipeline folders", (), "model_index.json"),
        FolderSpec("loras", "loras", "LoRAs, LCM-LoRA included", (".safetensors", ".pt", ".bin")),
        FolderSpec("controlnet", "controlnet", "ControlNet weights (InstantID IdentityNet too)", PT, "config.json"),
        FolderSpec("ipadapter", "ipadapter", "IP-Adapter weights", (".safetensors", ".bin", ".pth")),
        FolderSpec("clip_vision", "clip_vision", "CLIP vision encoders for IP-Adapter", PT, "config.json"),
        FolderSpec("clip_models", "clip_models", "full CLIP models for zero-shot ranking", PT, "config.json"),
        FolderSpec("vae", "vae", "VAE overrides", PT, "config.json"),
        FolderSpec("sams", "sams", "SAM checkpoints (vit_b / vit_l / vit_h)", PT),
        FolderSpec("grounding-dino", "grounding-dino", "Grounding DINO checkpoints and folders", PT, "config.json"),
        FolderSpec("insightface", "insightface", "InsightFace ONNX packs (antelopev2, buffalo_l)", (), "*.onnx", "models"),
        FolderSpec("instantid", "instantid", "InstantID ip-adapter.bin", (".bin", ".safetensors")),
        FolderSpec("upscale_models", "upscale_models", "Real-ESRGAN weights", PT),
        # issue 20: captions, image similarity, image labels (transformers folders)
        FolderSpec("blip", "blip", "BLIP captioning model folders (transformers)", (), "config.json"),
        FolderSpec("dinov2", "dinov2", "DINOv2 model folders (transformers) for image similarity", (), "config.json"),
        FolderSpec("vit", "vit", "ViT image-classification model folders (transformers)", (), "config.json"),
        # issue 20 (pose and depth): transformers model folders only (config.json marks one)
        FolderSpec("pose", "pose", "ViTPose pose estimators (transformers folders)", (), "config.json"),
        FolderSpec("depth", "depth", "Depth Anything / DPT depth estimators (transformers folders)", (), "config.json"),
    )
}

# Where to get the models of each folder; the README's model table has every file with its licence.
WHERE_TO_GET = {
    "checkpoints": "an SD1.5 or SDXL checkpoint (.safetensors), e.g. from the model's own release page",
    "diffusers": "a diffusers pipeline folder (the one holding model_index.json)",
    "loras": "e.g. the LCM-LoRA for SD1.5 or SDXL (latent-consistency/lcm-lora-sdv1-5, -sdxl)",
    "controlnet": "a ControlNet matching your pipeline (SD1.5 or SDXL)",
    "ipadapter": "IP-Adapter weights (h94/IP-Adapter)",
    "clip_vision": "the CLIP vision encoder the IP-Adapter was trained with",
    "clip_models": "an open_clip checkpoint or a transformers CLIPModel folder",
    "vae": "a VAE matching your pipeline",
    "sams": "a segment-anything checkpoint, e.g. sam_vit_b_01ec64.pth",
    "grounding-dino": "groundingdino_swint_ogc.pth with its BERT tokenizer files, or a transformers folder",
    "insightface": "a pack folder such as antelopev2/ or buffalo_l/ holding its .onnx files",
    "instantid": "InstantID ip-adapter.bin (InstantX/InstantID, non-commercial licence)",
    "upscale_models": "an upscale model such as RealESRGAN_x4plus.pth or 4x-UltraSharp.pth",
    # issue 20
    "blip": "a BLIP captioning folder such as blip-image-captioning-base/ (Salesforce/blip-image-captioning-base)",
    "dinov2": "a DINOv2 folder such as dinov2-base/ (facebook/dinov2-base)",
    "vit": "a ViT classifier folder such as vit-base-patch16-224/ (google/vit-base-patch16-224)",
    "pose": "a transformers ViTPose folder such as vitpose-base-simple/ (usyd-community/vitpose-base-simple)",
    "depth": "a transformers depth folder such as Depth-Anything-V2-Small-hf/ (depth-anything/Depth-Anything-V2-Small-hf)",
}


class ModelNotFoundError(VisionKitError):
    """A model name that is not (or no longer) in its folders; the message says what to do."""


class UnsafeModelNameError(VisionKitError):
    """A model name that tries to leave its model folder."""


def spec(key: str) -> FolderSpec:
    try:
        return FOLDERS[key]
    except KeyError as ex:
        raise KeyError(f"unknown VisionKit model folder key {key!r}; known: {', '.join(FOLDERS)}") from ex


def folder_paths_for(key: str) -> list[str]:
    """The folders searched for `key`, in order (ComfyUI's list when running inside it)."""
    s = spec(key)
    bases = host.model_folder_bases(key, s.folder)
    if s.subdir:
        bases = [os.path.join(b, s.subdir) for b in bases]
    return bases


def _is_model_dir(path: str, marker: str) -> bool:
    if not marker:
        return False
    if marker.startswith("*"):
        try:
            return any(n.endswith(marker[1:]) for n in os.listdir(path))
        except OSError:
            return False
    return os.path.isfile(os.path.join(path, marker))


MAX_DEPTH = 32  # folder levels below a model folder that are listed
MAX_ENTRIES = 100_000  # files and folders looked at per model folder
_warned_walk: set = set()


def _walk(base: str, s: FolderSpec) -> list[str]:
    """Model names under `base`. Symlinked folders are followed (users link model collections in), but each
    real folder is visited once, so a link loop (`loras/a -> .`) cannot make the walk endless or exponential;
    depth and the number of entries are bounded too (a warning names the folder when a bound is hit)."""
    found: list[str] = []
    if not os.path.isdir(base):
        return found
    seen = {os.path.realpath(base)}
    looked = 0
    for root, dirs, files in os.walk(base, followlinks=True):
        looked += len(dirs) + len(files)
        depth = 0 if root == base else os.path.relpath(root, base).count(os.sep) + 1
        keep = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            real = os.path.realpath(os.path.join(root, d))
            if real in seen:
                continue  # a link back to a folder already listed (a loop, or the same folder twice)
            seen.add(real)
            keep.append(d)
        if depth >= MAX_DEPTH or looked > MAX_ENTRIES:
            if keep and base not in _warned_walk:
                _warned_walk.add(base)
                log.warning("VisionKit: %s is deeper than %d levels or holds over %d entries; the listing stops "
                            "there", base, MAX_DEPTH, MAX_ENTRIES)
            keep = []
        dirs[:] = keep
        rel_root = os.path.relpath(root, base)
        rel = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        if rel and _is_model_dir(root, s.directories):
            found.append(rel[:-1])
            dirs[:] = []  # a model folder's own files are not models of their own
            continue
        for f in sorted(files):
            if s.extensions and f.lower().endswith(s.extensions) and not f.startswith("."):
                found.append(rel + f)
    return found


def list_models(key: str) -> list[str]:
    """Every model name in the folders of `key` (files and model folders), sorted, first folder wins."""
    s = spec(key)
    seen: dict[str, None] = {}
    for base in folder_paths_for(key):
        for name in _walk(base, s):
            seen.setdefault(name, None)
    return sorted(seen)


def check_name(name: str) -> str:
    """Refuse names that could leave the folder; return the name in '/' form."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeModelNameError("no model name was given: pick a file from the list")
    n = name.replace("\\", "/")
    if n.startswith("/") or posixpath.isabs(n) or (len(n) > 1 and n[1] == ":"):
        raise UnsafeModelNameError(
            f"model name {name!r} is an absolute path; give a name relative to the model folder, "
            "as listed in the node's dropdown")
    parts = n.split("/")
    if any(p in ("..", "") for p in parts) or "\x00" in n:
        raise UnsafeModelNameError(
            f"model name {name!r} tries to leave its model folder ('..' or an empty path part); "
            "give a name as listed in the node's dropdown")
    return n


def not_found_message(key: str, name: str, available: list[str] | None = None) -> str:
    s = spec(key)
    bases = folder_paths_for(key)
    available = list_models(key) if available is None else available
    there = ", ".join(available[:20]) + (" …" if len(available) > 20 else "") if available else "nothing"
    return (
        f"model {name!r} was not found in the {s.key} folder(s): {', '.join(bases) or '(none configured)'}. "
        f"Found there: {there}. Put {WHERE_TO_GET.get(key, s.holds)} into {bases[0] if bases else s.folder} "
        f"(the README's 'Models' table lists every file, its source and licence), then refresh the page.")


def resolve(key: str, name: str) -> str:
    """Full path of the model `name` of folder `key`, or a clear error."""
    n = check_name(name)
    available = list_models(key)
    if n not in available:
        raise ModelNotFoundError(not_found_message(key, name, available))
    for base in folder_paths_for(key):
        p = os.path.join(base, *n.split("/"))
        if os.path.exists(p):
            return p
    raise ModelNotFoundError(not_found_message(key, name, available))  # removed meanwhile
