"""Loading SD1.5 / SDXL pipelines (single-file checkpoints or diffusers folders) into the shared cache.

- `load_pipeline(path, dtype, vae_path, name)` → `PipelineHandle` (VK_PIPELINE). It loads eagerly through
  the cache, so a broken or wrong file fails at the loader, with the architecture in the message.
- The cached value is a `Components` (types): diffusers UNet2DConditionModel and AutoencoderKL,
  transformers CLIPTextModel (+ CLIPTextModelWithProjection for SDXL), transformers CLIPTokenizers (SD1.5 and
  SDXL's tokenizer pad with <|endoftext|>, SDXL's tokenizer_2 with "!"), and the scheduler config as a dict
  (the shipped one for single files, the folder's own for diffusers folders; build any scheduler from it with
  `SomeScheduler.from_config(comps.scheduler_config)`).
- A VAE override is its own cache entry (kind "sd_vae"); `use_pipeline(handle)` yields the Components with
  that VAE in place (the cached Components is never modified).
- Fully offline: single files get the configs shipped in models/sd/configs (overlaid with the file's
  shapes, see convert), tokenizers are built from open_clip's bundled BPE (perception/clip_inputs), diffusers and
  transformers only ever read local folders (local_files_only=True).
- dtype: "auto" is resolved by the loader (fp16 on CUDA, fp32 elsewhere) before the cache key is made, so
  "auto" and the dtype it means share one entry.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch

from ..core import host
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import WeightsError, load_state_dict
from .convert import (
    PipelineLoadError,
    convert,
    convert_vae_file,
    detect,
    shipped_config,
)
from .types import ARCH_NAMES, Components, PipelineHandle, use_components

log = logging.getLogger("visionkit")

DTYPES = ("auto", "fp32", "fp16", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PIPELINE_KIND = "sd_pipeline"
VAE_KIND = "sd_vae"
PAD = {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}


def resolve_dtype(dtype: str) -> str:
    """'auto' → 'fp16' on CUDA, 'fp32' elsewhere; other names checked."""
    if dtype not in DTYPES:
        raise PipelineLoadError(f"dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "fp16" if host.default_dtype() == torch.float16 else "fp32"
    return dtype


def torch_dtype(dtype: str, device=None) -> torch.dtype:
    """A model spec's dtype name as a torch dtype; "auto" (or anything else) is the device's default."""
    return TORCH_DTYPES.get(dtype) or host.default_dtype(device)


# ================================================================ building modules
def _empty_weights():
    try:
        from accelerate import init_empty_weights

        return init_empty_weights()
    except ImportError:  # pragma: no cover - accelerate is in requirements.txt; this is only slower
        return nullcontext()


def _load_module(module, sd: dict, what: str, where: str, dtype):
    """Put a converted state dict into a module built with empty weights; any key mismatch is an error."""
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    own = set(module.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise PipelineLoadError(
            f"{where}: the {what} weights do not fit the {what} configuration read from them "
            f"(missing {len(missing)}: {', '.join(missing[:4]) or '-'}; unexpected {len(unexpected)}: "
            f"{', '.join(unexpected[:4]) or '-'}); the file is damaged or a variant VisionKit does not know")
    try:
        module.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as ex:
        raise PipelineLoadError(f"{where}: the {what} weights do not fit ({str(ex).splitlines()[0][:300]})") from ex
    return _cast(module, dtype).eval().requires_grad_(False)


def _cast(module, dtype):
    """Cast floating tensors that are not `dtype` yet (plain Module.to: diffusers' own `to` warns on any dtype)."""
    if any(t.is_floating_point() and t.dtype != dtype for t in itertools.chain(module.parameters(), module.buffers())):
        torch.nn.Module.to(module, dtype)
    return module


def _text_model(cfg: dict, sd: dict, with_projection: bool, what: str, where: str, dtype):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with _empty_weights():
        model = cls(CLIPTextConfig(**cfg))
    if hasattr(model, "text_model"):  # transformers < 5.6 and ...WithProjection keep the text_model. prefix
        sd = {(k if k == "text_projection.weight" else "text_model." + k): v for k, v in sd.items()}
    return _load_module(model, sd, what, where, dtype)


def build_tokenizer(pad: str = "<|endoftext|>"):
    """A transformers CLIPTokenizer from open_clip's BPE (offline, as perception/clip_inputs builds it), 77 tokens, padding
    with `pad`. The pad token is given at construction, as the SD folders' tokenizer files give it, so it is a
    special token there too (SDXL's tokenizer_2 then reads "!!" as two pad tokens, exactly as diffusers does)."""
    from transformers import CLIPTokenizer

    from ..perception.clip_inputs import ClipModelError, bpe_vocab_and_merges

    try:
        vocab, merges = bpe_vocab_and_merges()
    except ClipModelError as ex:
        raise PipelineLoadError(str(ex)) from ex
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77, pad_token=pad)


def _from_single_file(path: str, dtype) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    name = os.path.basename(path)
    try:
        sd = load_state_dict(path)
    except WeightsError as ex:
        raise PipelineLoadError(str(ex)) from ex
    arch, inpaint = detect(sd, name)
    label = f"{name} ({ARCH_NAMES[arch]}{' inpainting' if inpaint else ''} checkpoint)"
    try:
        parts = convert(sd, arch)
    except PipelineLoadError as ex:
        raise PipelineLoadError(f"{label}: {ex}") from ex
    except (KeyError, IndexError, ValueError, RuntimeError) as ex:
        raise PipelineLoadError(f"{label}: could not convert its weights ({type(ex).__name__}: {str(ex)[:200]}); "
                                "the file is damaged or a variant VisionKit does not know") from ex
    del sd
    with _empty_weights():
        unet = UNet2DConditionModel.from_config(parts["unet"][0])
        vae = AutoencoderKL.from_config(parts["vae"][0])
    comps = Components(
        arch=arch, inpaint=inpaint, prediction="epsilon",
        unet=_load_module(unet, parts["unet"][1], "UNet", label, dtype),
        vae=_load_module(vae, parts["vae"][1], "VAE", label, dtype),
        text_encoder=_text_model(*parts["text_encoder"], False, "text encoder", label, dtype),
        tokenizer=build_tokenizer(PAD["tokenizer"]),
        scheduler_config=shipped_config(arch, "scheduler"))
    if arch == "sdxl":
        comps.text_encoder_2 = _text_model(*parts["text_encoder_2"], True, "OpenCLIP-bigG text encoder", label, dtype)
        comps.tokenizer_2 = build_tokenizer(PAD["tokenizer_2"])
    return comps


# ---------------------------------------------------------------- diffusers folders
def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as ex:
        raise PipelineLoadError(f"cannot read {path}: {ex}") from ex


def detect_folder(folder: str) -> tuple[str, dict]:
    """(arch, model_index) of a diffusers pipeline folder, or a clear error."""
    name = os.path.basename(folder.rstrip(os.sep))
    index = _read_json(os.path.join(folder, "model_index.json"))
    cls = str(index.get("_class_name", "?"))
    if "unet" not in index or not os.path.isfile(os.path.join(folder, "unet", "config.json")):
        raise PipelineLoadError(f"{name} is a {cls} folder without a UNet (unet/config.json), which is not supported: "
                                "VisionKit runs SD1.5 and SDXL pipelines")
    unet = _read_json(os.path.join(folder, "unet", "config.json"))

    def has(part: str) -> bool:
        return bool(index.get(part)) and index[part][0] is not None

    if unet.get("addition_embed_type") == "text_time" or has("text_encoder_2"):
        if not (has("text_encoder") and has("text_encoder_2")):
            raise PipelineLoadError(f"{name} looks like an SDXL refiner ({cls}, one OpenCLIP text encoder), which is "
                                    "not supported: use the SDXL base or a fine-tune of it")
        return "sdxl", index
    cross = unet.get("cross_attention_dim")
    if cross == 1024:
        raise PipelineLoadError(f"{name} looks like a Stable Diffusion 2.x pipeline ({cls}, 1024-d cross-attention), "
                                "which is not supported: VisionKit runs SD1.5 and SDXL pipelines")
    te = os.path.join(folder, "text_encoder", "config.json")
    width = _read_json(te).get("hidden_size") if has("text_encoder") and os.path.isfile(te) else None
    if width is None or cross != width:
        raise PipelineLoadError(f"{name} is a {cls} folder VisionKit does not know (UNet cross-attention {cross}, "
                                f"text encoder {width or 'missing'}; SD1.5 has 768 and a CLIP text encoder of 768)")
    return "sd15", index


def _variant(folder: str, part: str) -> str | None:
    """'fp16' when a part only has fp16-variant weight files (…fp16.safetensors)."""
    try:
        files = os.listdir(os.path.join(folder, part))
    except OSError as ex:
        raise PipelineLoadError(f"{os.path.basename(folder)} has no {part}/ folder") from ex
    plain = [f for f in files if f.endswith((".safetensors", ".bin")) and ".fp16." not in f]
    return "fp16" if not plain and any(".fp16." in f for f in files) else None


def _folder_tokenizer(folder: str, part: str):
    d = os.path.join(folder, part)
    if not (os.path.isfile(os.path.join(d, "vocab.json")) and os.path.isfile(os.path.join(d, "merges.txt"))
            or os.path.isfile(os.path.join(d, "tokenizer.json"))):
        return build_tokenizer(PAD[part])
    from transformers import CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(d, local_files_only=True)
    except Exception as ex:
        raise PipelineLoadError(f"{os.path.basename(folder)}/{part}: its tokenizer files could not be read "
                                f"({str(ex).splitlines()[0][:200] if str(ex) else type(ex).__name__})") from ex
    tok.model_max_length = 77
    return tok


def _transformers_dtype_kw(dtype) -> dict:
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype": dtype}


def _from_folder(folder: str, dtype) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    name = os.path.basename(folder.rstrip(os.sep))
    arch, _index = detect_folder(folder)
    label = f"{name} ({ARCH_NAMES[arch]} diffusers folder)"

    def load(cls, part, diffusers=True):
        kw = dict(local_files_only=True, variant=_variant(folder, part))
        try:
            if diffusers:
                return cls.from_pretrained(folder, subfolder=part, torch_dtype=dtype, **kw)
            return cls.from_pretrained(os.path.join(folder, part), **_transformers_dtype_kw(dtype), **kw)
        except PipelineLoadError:
            raise
        except Exception as ex:
            raise PipelineLoadError(f"{label}: its {part} could not be loaded ({type(ex).__name__}: "
                                    f"{str(ex).splitlines()[0][:300] if str(ex) else ''})") from ex

    unet = load(UNet2DConditionModel, "unet")
    sched_path = os.path.join(folder, "scheduler", "scheduler_config.json")
    sched = _read_json(sched_path) if os.path.isfile(sched_path) else shipped_config(arch, "scheduler")
    comps = Components(
        arch=arch, unet=unet, vae=load(AutoencoderKL, "vae"),
        text_encoder=load(CLIPTextModel, "text_encoder", False), tokenizer=_folder_tokenizer(folder, "tokenizer"),
        scheduler_config=sched, inpaint=int(unet.config.in_channels) == 9,
        prediction=str(sched.get("prediction_type") or "epsilon"))
    if arch == "sdxl":
        comps.text_encoder_2 = load(CLIPTextModelWithProjection, "text_encoder_2", False)
        comps.tokenizer_2 = _folder_tokenizer(folder, "tokenizer_2")
    for m in comps.vk_modules():
        _cast(m, dtype).eval().requires_grad_(False)
    return comps


def _build_pipeline(spec: ModelSpec, device) -> Loaded:
    dtype = TORCH_DTYPES[spec.dtype]
    comps = _from_folder(spec.path, dtype) if os.path.isdir(spec.path) else _from_single_file(spec.path, dtype)
    for m in comps.vk_modules():
        m.to(device)
    meta = {"arch": comps.arch, "inpaint": comps.inpaint, "prediction": comps.prediction,
            "latent_channels": int(comps.vae.config.latent_channels),
            "unet_out_channels": int(comps.unet.config.out_channels)}
    return Loaded(comps, meta=meta)


def _build_vae(spec: ModelSpec, device) -> Loaded:
    from diffusers import AutoencoderKL

    dtype = TORCH_DTYPES[spec.dtype]
    arch = spec.option("arch", "sd15")
    name = os.path.basename(spec.path.rstrip(os.sep))
    if os.path.isdir(spec.path):
        try:
            vae = AutoencoderKL.from_pretrained(spec.path, local_files_only=True, torch_dtype=dtype)
        except Exception as ex:
            raise PipelineLoadError(f"VAE folder {name} could not be loaded ({type(ex).__name__}: "
                                    f"{str(ex).splitlines()[0][:300] if str(ex) else ''})") from ex
        vae = _cast(vae, dtype).eval().requires_grad_(False)
    else:
        try:
            sd = load_state_dict(spec.path)
        except WeightsError as ex:
            raise PipelineLoadError(str(ex)) from ex
        cfg, vsd = convert_vae_file(sd, arch, name)
        with _empty_weights():
            vae = AutoencoderKL.from_config(cfg)
        vae = _load_module(vae, vsd, "VAE", f"VAE file {name}", dtype)
    vae.to(device)
    return Loaded(vae, meta={"arch": arch, "latent_channels": int(vae.config.latent_channels)})


# ================================================================ specs and handles
def pipeline_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=PIPELINE_KIND, path=path, build=_build_pipeline, dtype=resolve_dtype(dtype))


def vae_spec(path: str, arch: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=VAE_KIND, path=path, build=_build_vae, dtype=resolve_dtype(dtype),
                     options=(("arch", arch),))


def load_pipeline(path: str, dtype: str = "auto", vae_path: str | None = None, name: str = "") -> PipelineHandle:
    """Load (through the cache) and describe a pipeline; the VK_PIPELINE value of the loader node."""
    spec = pipeline_spec(path, dtype)
    meta = get_cache().load(spec).meta
    vspec = None
    if vae_path:
        vspec = vae_spec(vae_path, meta["arch"], spec.dtype)
        vmeta = get_cache().load(vspec).meta
        if vmeta["latent_channels"] != meta["unet_out_channels"]:
            raise PipelineLoadError(
                f"the VAE {os.path.basename(vae_path.rstrip(os.sep))} has {vmeta['latent_channels']} latent channels "
                f"but the {ARCH_NAMES[meta['arch']]} UNet of {os.path.basename(path.rstrip(os.sep))} works on "
                f"{meta['unet_out_channels']}: pick a VAE made for {ARCH_NAMES[meta['arch']]}, or '(from checkpoint)'")
    return PipelineHandle(spec=spec, arch=meta["arch"], inpaint=bool(meta["inpaint"]), prediction=meta["prediction"],
                          vae=vspec, name=name or os.path.basename(path.rstrip(os.sep)))


@contextmanager
def use_pipeline(handle: PipelineHandle) -> Iterator[Components]:
    """The handle's Components, pinned on the device, with the VAE override (if any) in place of its VAE."""
    with use_components(handle) as comps:
        if handle.vae is None:
            yield comps
        else:
            with get_cache().use(handle.vae) as vae:
                yield replace(comps, vae=vae)


__all__ = ["DTYPES", "PipelineLoadError", "build_tokenizer", "detect_folder", "load_pipeline",
           "pipeline_spec", "resolve_dtype", "use_pipeline", "vae_spec"]
