"""InstantID (SDXL): identity from a face embedding, pose from its keypoints.

What a run does, as InstantID's reference pipeline (pipeline_stable_diffusion_xl_instantid.py) does it:

- the face's ArcFace embedding (InsightFace's raw 512-d `embedding`, not the normalised one; several
  reference images: their embeddings averaged) goes through the adapter's Resampler to 16 image-prompt
  tokens; under classifier-free guidance the negative half gets resampler(zeros) (the pipeline runs the
  resampler on [zeros, embedding]);
- those tokens feed IP-Adapter attention processors on the UNet's cross-attention layers (weights from
  the file's "ip_adapter" part, scale = ip_weight), installed for the run only (models/sd/ip_attention.py);
- the IdentityNet (an SDXL ControlNet) gets the keypoint image (models/sd/instantid_keypoints.py) as its hint and,
  unlike other ControlNets, the image-prompt tokens as its encoder_hidden_states (not the prompt); its
  residuals are scaled by controlnet_strength. It runs through controlnet.ControlNetRun, so it follows
  the same start/end window (start <= i/n < end), hint resizing (nearest, to the output size) and CFG
  halves as other ControlNets. The IP-Adapter attention uses the same window (0 outside it), as
  ComfyUI-style InstantID nodes do.

Files: the adapter is InstantX's `ip-adapter.bin` ({"image_proj": Resampler, "ip_adapter": numbered
to_k_ip / to_v_ip weights}, read with torch.load(weights_only=True)) or a .safetensors conversion with
"image_proj." / "ip_adapter." prefixes, from the `instantid` folder; the IdentityNet from `controlnet`
(a diffusers folder such as InstantX's ControlNetModel/, or a single file), loaded by
controlnet.load_controlnet. Building the Resampler: its key map is models/sd/resampler.py; the run (tokens,
the sampler hook): models/sd/instantid_run.py.

The Resampler (IP-Adapter Plus layout) is built as diffusers' IPAdapterPlusImageProjection with sizes read
from the weights: width from `latents`, token count, input (embedding) and output widths from the
projections, depth from the number of layers, feed-forward ratio from its first linear layer. The head
count cannot be read from shapes (only heads × head width): it is taken as attention width / 64 (the
IP-Adapter convention, also diffusers'): 20 heads for the real file's 1280. InstantID is SDXL only: an
adapter with SD1.5's 768-wide output or an SD1.5 ControlNet is refused with a message saying so.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

import torch

from ..core import identify
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.imageops import check_image
from ..core.weights import WeightsError, load_state_dict
from ..perception.faces import analyze
from .controlnet import ControlNetError, ControlNetHandle, load_controlnet
from .instantid_keypoints import keypoints_image
from .pipeline import torch_dtype
from .resampler import resampler_to_diffusers
from .types import (
    ARCH_NAMES,
    INSTANTID_TYPE,
    ControlEntry,
    GenerationError,
    append_control,
)

log = logging.getLogger("visionkit")

KIND = "instantid_adapter"
DIM_HEAD = 64  # the IP-Adapter Resampler's head width (heads = attention width / 64)
CLIP_WIDTHS = (768, 1024, 1280, 1664)  # image-encoder widths of IP-Adapter Plus files
SD15_WIDTH = 768


class InstantIDError(GenerationError):
    """An InstantID file or input that cannot be used; the message says what and how to fix it."""


@dataclass(frozen=True)
class ResamplerShape:
    dim: int
    depth: int
    heads: int
    dim_head: int
    num_queries: int
    embedding_dim: int
    output_dim: int
    ff_mult: float


@dataclass(frozen=True)
class InstantIDHandle:
    """VK_INSTANTID: the adapter file (through the cache) and the IdentityNet ControlNet handle."""

    adapter: ModelSpec
    controlnet: ControlNetHandle
    shape: ResamplerShape
    arch: str = "sdxl"
    name: str = ""


class _TensorBag(torch.nn.Module):
    """Plain tensors as buffers, so the cache moves and counts them with the rest."""

    def __init__(self, tensors: dict):
        super().__init__()
        self.names = {}
        for i, (k, v) in enumerate(sorted(tensors.items())):
            self.register_buffer(f"t{i}", v)
            self.names[k] = f"t{i}"

    def as_dict(self) -> dict:
        return {k: getattr(self, n) for k, n in self.names.items()}


@dataclass
class InstantIDAdapter:
    """What the cache holds for an ip-adapter.bin: the Resampler and the IP attention weights."""

    resampler: torch.nn.Module
    ip: _TensorBag
    shape: ResamplerShape
    extras: dict = field(default_factory=dict)

    def vk_modules(self):
        return [self.resampler, self.ip]

    def ip_state_dict(self) -> dict:
        """The numbered IP attention weights as in the file ("1.to_k_ip.weight", ...)."""
        return self.ip.as_dict()


# ------------------------------------------------------------------ reading the adapter file
def split_adapter(sd: dict, name: str = "InstantID") -> tuple[dict, dict]:
    """A flat state dict ("image_proj.*", "ip_adapter.*") → (resampler weights, IP attention weights)."""
    proj = {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")}
    ip = {k[len("ip_adapter."):]: v for k, v in sd.items() if k.startswith("ip_adapter.")}
    if not proj or not ip:
        if "controlnet_cond_embedding.conv_in.weight" in sd or any(k.startswith("control_model.") for k in sd):
            raise InstantIDError(f"{name} is a ControlNet (InstantID's IdentityNet?), not the InstantID adapter: put "
                                 "it in models/controlnet and pick it as the loader's controlnet_name; the adapter "
                                 "is ip-adapter.bin in models/instantid")
        raise InstantIDError(f"{name} is not an InstantID adapter (ip-adapter.bin with 'image_proj' and 'ip_adapter' "
                             f"parts): it looks like {identify.what_is(sd, exclude='instantid')}")
    if "proj.weight" in proj or "proj.0.weight" in proj or "perceiver_resampler.proj_in.weight" in proj \
            or "latents" not in proj:
        raise InstantIDError(f"{name} is an IP-Adapter (its image projection is not InstantID's Resampler): load it "
                             "with VisionKit Load IP-Adapter from models/ipadapter")
    return proj, ip


def _count(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def resampler_shape(proj: dict, name: str = "InstantID") -> ResamplerShape:
    """The Resampler's sizes read from its weights (see the module docstring for the head count)."""
    try:
        _, q, dim = proj["latents"].shape
        emb = int(proj["proj_in.weight"].shape[1])
        out = int(proj["proj_out.weight"].shape[0])
        depth = _count(proj, r"layers\.(\d+)\.")
        inner = int(proj["layers.0.0.to_q.weight"].shape[0])
        ff = int(proj["layers.0.1.1.weight"].shape[0])
    except (KeyError, ValueError, TypeError) as ex:
        raise InstantIDError(f"{name}: cannot read the InstantID Resampler's layout from its weights ({ex!r} missing "
                             "or malformed); the file is damaged or of another kind") from ex
    heads, dim_head = (inner // DIM_HEAD, DIM_HEAD) if inner % DIM_HEAD == 0 else (1, inner)
    if emb in CLIP_WIDTHS and emb != 512:
        raise InstantIDError(f"{name} takes {emb}-wide CLIP image features: it is an IP-Adapter Plus, not InstantID "
                             "(which takes 512-d face embeddings); load it with VisionKit Load IP-Adapter")
    if out == SD15_WIDTH:
        raise InstantIDError(f"{name} produces 768-wide tokens: it is made for SD1.5. VisionKit's InstantID is SDXL "
                             "only (InstantX's ip-adapter.bin with an SDXL pipeline)")
    return ResamplerShape(dim=int(dim), depth=depth, heads=heads, dim_head=dim_head, num_queries=int(q),
                          embedding_dim=emb, output_dim=out, ff_mult=ff / int(dim))


def build_resampler(proj: dict, shape: ResamplerShape, name: str = "InstantID"):
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    s = shape
    with torch.device("meta"):
        model = IPAdapterPlusImageProjection(embed_dims=s.embedding_dim, output_dims=s.output_dim, hidden_dims=s.dim,
                                             depth=s.depth, dim_head=s.dim_head, heads=s.heads,
                                             num_queries=s.num_queries, ffn_ratio=s.ff_mult)
    try:
        model.load_state_dict(resampler_to_diffusers(proj), strict=True, assign=True)
    except RuntimeError as ex:
        raise InstantIDError(f"{name}: the Resampler weights do not fit the layout read from them "
                             f"({str(ex).splitlines()[0][:240]}); the file is damaged or of another kind") from ex
    return model.eval().requires_grad_(False)


def read_adapter(path: str) -> tuple[dict, dict]:
    name = os.path.basename(path)
    try:
        sd = load_state_dict(path)
    except WeightsError as ex:
        raise InstantIDError(str(ex)) from ex
    return split_adapter(sd, name)


def _check_ip(ip: dict, shape: ResamplerShape, name: str) -> None:
    keys = [k for k in ip if re.fullmatch(r"\d+\.to_[kv]_ip\.weight", k)]
    if not keys or len(keys) != len(ip):
        raise InstantIDError(f"{name}: its 'ip_adapter' part should hold numbered to_k_ip / to_v_ip weights; found "
                             f"{sorted(ip)[:4]}")
    widths = {int(ip[k].shape[1]) for k in keys}
    if widths != {shape.output_dim}:
        raise InstantIDError(f"{name}: its IP attention weights take {sorted(widths)}-wide tokens but its Resampler "
                             f"makes {shape.output_dim}-wide ones; the file is damaged or mixed")


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path)
    proj, ip = read_adapter(spec.path)
    shape = resampler_shape(proj, name)
    _check_ip(ip, shape, name)
    dtype = torch_dtype(spec.dtype, device)
    resampler = build_resampler(proj, shape, name).to(device=device, dtype=dtype)
    bag = _TensorBag({k: v.to(dtype) for k, v in ip.items()}).to(device)
    return Loaded(InstantIDAdapter(resampler, bag, shape), meta={"tokens": shape.num_queries,
                                                                  "embedding_dim": shape.embedding_dim,
                                                                  "output_dim": shape.output_dim})


def adapter_spec(path: str, dtype: str = "auto") -> ModelSpec:
    return ModelSpec(kind=KIND, path=path, build=_build, dtype=dtype)


def load_instantid(adapter_path: str, controlnet_path: str, dtype: str = "auto") -> InstantIDHandle:
    """Load (or find in the cache) the adapter and the IdentityNet; the VK_INSTANTID handle."""
    spec = adapter_spec(adapter_path, dtype)
    with get_cache().use(spec) as adapter:
        shape = adapter.shape
    cn_name = os.path.basename(controlnet_path.rstrip(os.sep))
    try:
        cn = load_controlnet(controlnet_path, dtype)
    except ControlNetError as ex:
        raise InstantIDError(f"the IdentityNet ControlNet cannot be used: {ex}") from ex
    if cn.arch != "sdxl":
        raise InstantIDError(f"{cn_name} is an {ARCH_NAMES.get(cn.arch, cn.arch)} ControlNet; InstantID is SDXL only. "
                             "Pick InstantID's IdentityNet (InstantX/InstantID ControlNetModel) as controlnet_name")
    with get_cache().use(cn.spec) as model:
        width = int(model.config.cross_attention_dim)
    if width != shape.output_dim:
        raise InstantIDError(f"{cn_name} takes {width}-wide tokens but the InstantID adapter "
                             f"{os.path.basename(adapter_path)} makes {shape.output_dim}-wide ones: this ControlNet is "
                             "not InstantID's IdentityNet (or the two belong to different models)")
    return InstantIDHandle(spec, cn, shape, "sdxl", os.path.basename(adapter_path))


# ------------------------------------------------------------------ the face entry
def mean_embedding(embeddings, expected: int | None = None, what: str = "face image") -> torch.Tensor:
    """The average of several raw face embeddings (InstantID's multi-reference practice), float32 (E,)."""
    rows = [torch.as_tensor(e, dtype=torch.float32).reshape(-1) for e in embeddings]
    if not rows:
        raise InstantIDError(f"no face embedding to use: connect a {what} with a face")
    sizes = {r.numel() for r in rows}
    if len(sizes) != 1:
        raise InstantIDError(f"the face embeddings have different sizes {sorted(sizes)}; use one face model")
    if expected is not None and rows[0].numel() != expected:
        raise InstantIDError(f"the face model gives {rows[0].numel()}-d embeddings but this InstantID adapter expects "
                             f"{expected}-d ones (antelopev2's ArcFace gives 512): use the antelopev2 face model")
    return torch.stack(rows).mean(0)


def make_entry(handle: InstantIDHandle, embedding: torch.Tensor, keypoints_image: torch.Tensor, ip_weight: float,
               controlnet_strength: float, start: float = 0.0, end: float = 1.0, chain=None) -> tuple:
    """The VK_CONTROL chain with an InstantID entry appended (the embedding and kps image already made)."""
    if not isinstance(handle, InstantIDHandle):
        raise InstantIDError(f"'instantid' must come from VisionKit Load InstantID ({INSTANTID_TYPE}), got "
                             f"{type(handle).__name__}")
    if not 0.0 <= float(start) < float(end) <= 1.0:
        raise InstantIDError(f"start_percent ({start}) must be below end_percent ({end}), both between 0 and 1")
    emb = mean_embedding([embedding], handle.shape.embedding_dim)
    entry = ControlEntry(kind="instantid", model=handle, arch=handle.arch, image=keypoints_image.detach().cpu(),
                         strength=float(controlnet_strength), start=float(start), end=float(end),
                         extra=(("embedding", emb), ("ip_weight", float(ip_weight))))
    return append_control(chain, entry)


def largest_face(faces):
    """The face with the largest box (InstantID's reference code sorts by box area and takes the last)."""
    def area(f):
        return (float(f.bbox[2]) - float(f.bbox[0])) * (float(f.bbox[3]) - float(f.bbox[1]))

    return sorted(faces, key=area)[-1]  # sorted (stable), not max: of equal areas the last, like the reference


def faces_per_image(face_model, image, what: str) -> list:
    """The largest face of every image of the batch; no face in one of them is an error naming it."""
    img = check_image(image, what)[..., :3]
    found = analyze(face_model, img)
    out = []
    for i, faces in enumerate(found):
        if not faces:
            where = f"the {what}" if len(found) == 1 else f"{what} {i + 1} of {len(found)} (batch index {i})"
            raise InstantIDError(f"no face was found in {where}: InstantID needs a clearly visible face (a frontal "
                                 "face of at least ~64 pixels); use another image or crop it closer to the face")
        out.append(largest_face(faces))
    return out


def apply_instantid(handle: InstantIDHandle, face_model, face_image, ip_weight: float = 0.8,
                    controlnet_strength: float = 0.8, start: float = 0.0, end: float = 1.0, pose_image=None,
                    chain=None) -> tuple[tuple, torch.Tensor]:
    """(the chain with an InstantID entry appended, the keypoint IMAGE the IdentityNet sees).

    Identity: the largest face of each face image, embeddings averaged. Keypoints: the largest face of
    each pose image (one hint per pose image, drawn at its size), or else of the first face image (at its
    size); the sampler resizes the hint to the output size like any ControlNet hint.
    """
    if not isinstance(handle, InstantIDHandle):
        raise InstantIDError(f"'instantid' must come from VisionKit Load InstantID ({INSTANTID_TYPE}), got "
                             f"{type(handle).__name__}")
    refs = faces_per_image(face_model, face_image, "face image")
    if any(getattr(f, "embedding", None) is None for f in refs):
        raise InstantIDError("the face model gave no face embedding (its pack has no ArcFace recognition model): "
                             "InstantID needs one; load the antelopev2 pack with VisionKit Load Face Analysis")
    emb = mean_embedding([f.embedding for f in refs], handle.shape.embedding_dim)
    if pose_image is not None:
        poses = faces_per_image(face_model, pose_image, "pose image")
        h, w = pose_image.shape[-3:-1]
    else:
        poses = refs[:1]
        h, w = face_image.shape[-3:-1]
    kps = torch.cat([keypoints_image(f.kps, w, h) for f in poses])
    return make_entry(handle, emb, kps, ip_weight, controlnet_strength, start, end, chain), kps


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    """InstantID's ip-adapter.bin: an IP-Adapter layout whose resampler takes 512-d face embeddings."""
    proj_in = sd.get("image_proj.proj_in.weight")
    if proj_in is not None and getattr(proj_in, "shape", (0, 0))[-1] == 512 \
            and identify.has_prefix(keys, "image_proj.layers."):
        return f"InstantID's ip-adapter.bin (face-embedding resampler): {identify.goes('instantid')}"
    return None


identify.register("instantid", _what_file, order=49, place=identify.Place("instantid", "VisionKitInstantIDLoader"))
