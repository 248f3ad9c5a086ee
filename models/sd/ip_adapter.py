"""IP-Adapter (SD1.5 / SDXL): reading the files, what kind an adapter is, loading it with its CLIP vision encoder.

Files (folder `ipadapter`): h94/IP-Adapter's .safetensors (keys `image_proj.*` / `ip_adapter.*`) or .bin
({"image_proj": {...}, "ip_adapter": {...}}, loaded with torch.load(weights_only=True)). What a file is comes
from its weights:
- kind: base (`image_proj.proj` + `norm`: 4 tokens from the CLIP image embedding), plus (`latents`, a
  Resampler over the encoder's penultimate hidden states; "plus-face" when the file name says face — same
  architecture, other training), full-face (`proj.0/2/3`: an MLP over the penultimate hidden states, one
  token per patch + CLS). FaceID adapters (InsightFace embeddings, LoRAs) are refused with a message.
- architecture: the cross-attention width of its to_k_ip layers: 768 = SD1.5, 2048 = SDXL (1024 = SD2.x is
  refused); other widths (test models, unusual bases) take the architecture from the file name ("sdxl"/"xl"
  → SDXL, else SD1.5). The layer count is checked against the pipeline's UNet at run time (SD1.5 16, SDXL 70).
- the image encoder it expects: base adapters read the encoder's projection (1024 wide = ViT-H/14,
  1280 = ViT-bigG/14), plus/full-face adapters its hidden states (1280 = ViT-H/14, 1664 = ViT-bigG/14).
  Loading with an encoder of another width is an error naming both (e.g. ip-adapter_sdxl with ViT-H).

Reference images → tokens, the modes and the sampler's hook: models/sd/ip_adapter_run.py.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..core import identify
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import WeightsError, load_state_dict
from .clip_vision import ENCODER_NAMES, PROJECTION_NAMES, clip_vision_spec
from .pipeline import torch_dtype
from .resampler import resampler_to_diffusers
from .types import ARCH_NAMES, GenerationError

KIND = "ipadapter"


class IPAdapterError(GenerationError):
    """An IP-Adapter file or combination that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class IPAdapterInfo:
    kind: str  # base | plus | plus-face | full-face
    arch: str  # sd15 | sdxl
    tokens: int  # image tokens per reference image (full-face: per encoder token count, set at load)
    cross_dim: int
    encoder_width: int  # base: the encoder's projection width; others: its hidden width
    uses_hidden_states: bool
    layers: int


@dataclass(frozen=True)
class IPAdapterHandle:
    """VK_IPADAPTER: the IP-Adapter and its CLIP vision encoder through the cache, and what they are."""

    ipadapter: ModelSpec
    clip_vision: ModelSpec
    kind: str
    arch: str
    tokens: int
    name: str = ""
    encoder: str = ""


# ------------------------------------------------------------------ reading and recognising
def read_ipadapter(path: str) -> tuple[dict, dict]:
    """(image_proj state dict, ip_adapter state dict) of an IP-Adapter file."""
    name = os.path.basename(path)
    if path.lower().endswith((".safetensors", ".sft")):
        try:
            flat = load_state_dict(path)
        except WeightsError as ex:
            raise IPAdapterError(str(ex)) from ex
    else:
        flat = _load_pickle_free(path, name)
    proj = {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")}
    ip = {k[len("ip_adapter."):]: v for k, v in flat.items() if k.startswith("ip_adapter.")}
    if not proj or not ip:
        raise IPAdapterError(f"{name} is not an IP-Adapter: {_describe(flat)}. Put IP-Adapter files "
                             "(e.g. ip-adapter_sd15.safetensors from h94/IP-Adapter) in models/ipadapter.")
    return proj, ip


def _load_pickle_free(path: str, name: str) -> dict:
    """A .bin/.pth IP-Adapter ({"image_proj": {...}, "ip_adapter": {...}}), flattened, weights_only."""
    try:
        if os.path.getsize(path) == 0:
            raise IPAdapterError(f"{name} is an empty file: the download failed; download it again")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except IPAdapterError:
        raise
    except Exception as ex:
        msg = str(ex)
        if "Weights only load failed" in msg or "Unsupported global" in msg:
            raise IPAdapterError(f"{name} contains pickled Python objects, not just tensors, so VisionKit refuses to "
                                 "load it; use the .safetensors version of this IP-Adapter") from ex
        first = msg.splitlines()[0][:150] if msg else repr(ex)
        raise IPAdapterError(f"{name} could not be read as PyTorch weights ({first}); it may be truncated: download it "
                             "again") from ex
    if not isinstance(obj, dict):
        raise IPAdapterError(f"{name} holds a {type(obj).__name__}, not IP-Adapter weights")
    flat = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, torch.Tensor)})
        elif isinstance(v, torch.Tensor):
            flat[k] = v
    return flat


def _describe(sd: dict) -> str:
    keys = list(sd)
    if any(k.startswith("vision_model.") for k in keys) or "visual_projection.weight" in sd:
        return "it looks like a CLIP vision encoder: it goes in models/clip_vision (the second file of this loader)"
    if any(k.startswith("visual.") for k in keys):
        return "it looks like an open_clip CLIP model"
    return "it looks like " + identify.what_is(sd, exclude="ipadapter") if sd else "it holds no tensors"


def _width_arch(cross: int, name: str) -> str:
    if cross == 768:
        return "sd15"
    if cross == 2048:
        return "sdxl"
    if cross == 1024:
        raise IPAdapterError(f"{name} is an IP-Adapter for Stable Diffusion 2.x (1024-wide cross-attention); "
                             "VisionKit runs SD1.5 and SDXL")
    return "sdxl" if re.search(r"sdxl|(^|[^a-z])xl([^a-z]|$)", name.lower()) else "sd15"


def inspect_ipadapter(proj: dict, ip: dict, name: str = "IP-Adapter") -> IPAdapterInfo:
    """What an IP-Adapter is, from its weights (see the module docstring)."""
    if any(k.startswith("perceiver_resampler.") for k in proj) or any("lora" in k for k in ip) or (
            "norm.weight" in proj and "proj.0.weight" in proj and "proj.3.weight" not in proj):
        raise IPAdapterError(f"{name} is an IP-Adapter FaceID model: it needs InsightFace face embeddings and its own "
                             "LoRA, which VisionKit does not run; use ip-adapter-plus-face or InstantID instead")
    k_ip = [ip[k] for k in ip if k.endswith(".to_k_ip.weight")]
    if not k_ip:
        raise IPAdapterError(f"{name} has no to_k_ip weights: not an IP-Adapter, or a damaged file")
    cross = {int(t.shape[1]) for t in k_ip}
    if len(cross) != 1:
        raise IPAdapterError(f"{name} mixes cross-attention widths {sorted(cross)}: damaged file")
    cross_dim = cross.pop()
    if "proj.weight" in proj and "norm.weight" in proj:
        kind, out, enc, hidden = "base", int(proj["norm.weight"].shape[0]), int(proj["proj.weight"].shape[1]), False
        tokens = int(proj["proj.weight"].shape[0]) // out
    elif "proj.3.weight" in proj:
        kind, hidden = "full-face", True
        out, enc = int(proj["proj.3.weight"].shape[0]), int(proj["proj.0.weight"].shape[1])
        tokens = 0  # one per encoder token
    elif "latents" in proj and "proj_in.weight" in proj:
        kind = "plus-face" if "face" in name.lower() else "plus"
        out, enc, hidden = int(proj["proj_out.weight"].shape[0]), int(proj["proj_in.weight"].shape[1]), True
        tokens = int(proj["latents"].shape[1])
    else:
        raise IPAdapterError(f"{name}: unknown IP-Adapter image projection (keys {sorted(proj)[:4]}); VisionKit "
                             "runs the base, plus, plus-face and full-face IP-Adapters")
    if out != cross_dim:
        raise IPAdapterError(f"{name}: its image projection makes {out}-wide tokens but its attention layers take "
                             f"{cross_dim}-wide ones: damaged file")
    return IPAdapterInfo(kind, _width_arch(cross_dim, name), tokens, cross_dim, enc, hidden, len(k_ip))


# ------------------------------------------------------------------ the image projection (diffusers classes)
def build_image_proj(info: IPAdapterInfo, proj: dict, name: str = "IP-Adapter"):
    from diffusers.models.embeddings import (
        ImageProjection,
        IPAdapterFullImageProjection,
        IPAdapterPlusImageProjection,
    )

    try:
        if info.kind == "base":
            sd = {k.replace("proj.", "image_embeds.", 1) if k.startswith("proj.") else k: v for k, v in proj.items()}
            cls, kw = ImageProjection, {"image_embed_dim": info.encoder_width, "cross_attention_dim": info.cross_dim,
                                        "num_image_text_embeds": info.tokens}
        elif info.kind == "full-face":
            names = {"proj.0": "ff.net.0.proj", "proj.2": "ff.net.2", "proj.3": "norm"}
            sd = {names[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in proj.items()}
            cls, kw = IPAdapterFullImageProjection, {"image_embed_dim": info.encoder_width,
                                                     "cross_attention_dim": info.cross_dim}
        else:
            sd = resampler_to_diffusers(proj)
            hidden_dims = int(sd["latents"].shape[2])
            cls, kw = IPAdapterPlusImageProjection, {
                "embed_dims": info.encoder_width, "output_dims": info.cross_dim, "hidden_dims": hidden_dims,
                "depth": len({m.group(1) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))}), "dim_head": 64,
                "heads": max(1, int(sd["layers.0.attn.to_q.weight"].shape[0]) // 64), "num_queries": info.tokens,
                "ffn_ratio": int(sd["layers.0.ff.1.net.0.proj.weight"].shape[0]) / hidden_dims}
        with torch.device("meta"):
            module = cls(**kw)
    except (KeyError, IndexError, ValueError, TypeError) as ex:
        raise IPAdapterError(f"{name}: cannot build its {info.kind} image projection ({type(ex).__name__}: {ex}); "
                             "damaged or unsupported file") from ex
    try:
        module.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as ex:
        raise IPAdapterError(f"{name}: the image projection's weights do not fit a {info.kind} IP-Adapter "
                             f"({str(ex).splitlines()[0][:200]}); damaged or unsupported file") from ex
    return module.eval()


class IPAdapterModel(torch.nn.Module):
    """What the cache holds for an IP-Adapter file: the image projection and the numbered to_k_ip/to_v_ip."""

    def __init__(self, image_proj, ip: dict, info: IPAdapterInfo):
        super().__init__()
        self.image_proj = image_proj
        self.info = info
        self._names = []
        for k, v in ip.items():
            buf = "w_" + k.replace(".", "_")
            self.register_buffer(buf, v)
            self._names.append((k, buf))

    def ip_state_dict(self) -> dict:
        return {k: getattr(self, buf) for k, buf in self._names}


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path)
    proj, ip = read_ipadapter(spec.path)
    info = inspect_ipadapter(proj, ip, name)
    model = IPAdapterModel(build_image_proj(info, proj, name), ip, info).requires_grad_(False)
    model.to(device=device, dtype=torch_dtype(spec.dtype, device))
    return Loaded(model, meta={"kind": info.kind, "arch": info.arch, "tokens": info.tokens, "layers": info.layers})


def ipadapter_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=KIND, path=path, build=_build, dtype=dtype)


def _expected_encoder(info: IPAdapterInfo) -> str:
    w = info.encoder_width
    what = "hidden states" if info.uses_hidden_states else "image embeddings"
    name = (ENCODER_NAMES if info.uses_hidden_states else PROJECTION_NAMES).get(w)
    return f"{name} {what} ({w} wide)" if name else f"{w}-wide CLIP {what}"


def load_ipadapter(ipadapter_path: str, clip_vision_path: str, dtype: str = "auto") -> IPAdapterHandle:
    """Load (or find in the cache) an IP-Adapter and its CLIP vision encoder; check they belong together."""
    cache = get_cache()
    entry = cache.load(ipadapter_spec(ipadapter_path, dtype))
    name = os.path.basename(ipadapter_path)
    cspec = clip_vision_spec(clip_vision_path, dtype)
    centry = cache.load(cspec)
    info: IPAdapterInfo = entry.value.info
    got = centry.meta["hidden"] if info.uses_hidden_states else centry.meta["projection"]
    if got != info.encoder_width:
        m = centry.meta
        have = f"{m['encoder']} ({m['hidden']}-wide hidden states, {m['projection']}-wide image embeddings)"
        raise IPAdapterError(
            f"{name} ({ARCH_NAMES[info.arch]} {info.kind}) expects {_expected_encoder(info)}, but "
            f"{os.path.basename(clip_vision_path.rstrip(os.sep))} is {have}: choose the image encoder this adapter was "
            "trained with (h94: models/image_encoder = ViT-H/14 for SD1.5 and the *_vit-h SDXL adapters, "
            "sdxl_models/image_encoder = ViT-bigG/14 for ip-adapter_sdxl / ip-adapter-plus_sdxl)")
    tokens = info.tokens or int((centry.meta["image_size"] // _patch(centry)) ** 2 + 1)
    return IPAdapterHandle(entry.spec, cspec, info.kind, info.arch, tokens, name, centry.meta["encoder"])


def _patch(centry) -> int:
    return int(centry.value.config.patch_size)


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if identify.has_prefix(keys, "image_proj.", "ip_adapter.") or identify.contains(keys, "to_k_ip", "to_v_ip"):
        return f"IP-Adapter weights: {identify.goes('ipadapter')}"
    return None


identify.register("ipadapter", _what_file, order=50, place=identify.Place("ipadapter", "VisionKitIPAdapterLoader"))
