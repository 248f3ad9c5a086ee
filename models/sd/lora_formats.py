"""LoRA files → the normalised LoraFile (parsing, formats, architecture); see models/sd/lora.py for the list of
formats and how the layers are resolved and applied."""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import torch

from ..core import identify
from . import lora_lycoris as lycoris
from .types import ARCH_NAMES, GenerationError

log = logging.getLogger("visionkit")

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


class LoraError(GenerationError):
    """A LoRA file that cannot be used (wrong kind of file, unsupported variant, does not fit)."""


# ------------------------------------------------------------------ the parsed file
@dataclass(eq=False)
class LoraLayer:
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    key: str  # module name as written (dotted diffusers/LDM/transformers name, or kohya's flattened name)
    down: torch.Tensor | None  # (rank, in) or (rank, in, kh, kw); None for LoHa / LoKr
    up: torch.Tensor | None  # (out, rank) or (out, rank, 1, 1)
    scale: float  # alpha / rank (1 when the file has no alpha)
    kind: str = "lora"  # "lora" | "loha" | "lokr" (models/sd/lora_lycoris.py)
    factors: dict | None = None  # the LoHa / LoKr tensors by role

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def dims(self) -> tuple[int, int, int]:
        """(out, in channels, in · kernel numel) of the weight this layer changes."""
        if self.kind != "lora":
            return lycoris.shape_of(self.kind, self.factors)
        return int(self.up.shape[0]), int(self.down.shape[1]), int(self.down[0].numel())

    def tensors(self) -> list:
        return list(self.factors.values()) if self.factors else [self.down, self.up]


@dataclass(eq=False)
class LoraFile:
    name: str
    format: str  # "kohya" | "peft" | "diffusers" | "comfyui" | "loha" | "lokr" | "loha+lokr"
    layers: tuple
    arch: str | None  # "sd15" | "sdxl" | None (not decidable from the file: decided against the pipeline)
    arch_reason: str = ""
    meta: dict = field(default_factory=dict)

    def components(self) -> list[str]:
        return [c for c in COMPONENTS if any(l.component == c for l in self.layers)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for l in self.layers for t in l.tensors())

    def describe(self) -> str:
        parts = [f"{sum(1 for l in self.layers if l.component == c)} {c} layers" for c in self.components()]
        arch = ARCH_NAMES.get(self.arch, self.arch) if self.arch else "architecture from the pipeline"
        return f"{self.format} LoRA, {arch}, " + ", ".join(parts)


# ------------------------------------------------------------------ what a file is (core/identify.py)
def _what_file(sd, keys) -> str | None:
    if any(x.endswith(("lora_down.weight", "lora_A.weight", "lora.down.weight")) for x in keys) \
            or identify.has_prefix(keys, "lora_unet_", "lora_te"):
        return f"a LoRA: {identify.goes('lora')}"
    return None


identify.register("lora", _what_file, order=25, place=identify.Place("loras", "VisionKitLoraLoader"))


# ------------------------------------------------------------------ parsing
_UNSUPPORTED = (  # (key test, what the file is)
    (lambda k: k.endswith((".hada_t1", ".hada_t2", ".lokr_t2")), "a LoHa/LoKr with a Tucker (CP) decomposition"),
    (lambda k: k.endswith(".lora_mid.weight"), "a LoCon with a Tucker middle weight (lora_mid)"),
    (lambda k: "dora_scale" in k or "lora_magnitude_vector" in k, "a DoRA LoRA"),
    (lambda k: k.endswith((".diff", ".diff_b")), "a full-weight-difference LoRA"),
    (lambda k: "oft_blocks" in k or "oft_diag" in k, "an OFT/BOFT adapter"),
    (lambda k: k.endswith(".on_input"), "an IA3 adapter"),
)

_ROLE_PATTERNS = (
    (re.compile(r"^(?P<base>.+?)\.(?:lora_down|lora\.down|lora_linear_layer\.down)\.weight$"), "down"),
    (re.compile(r"^(?P<base>.+?)\.(?:lora_up|lora\.up|lora_linear_layer\.up)\.weight$"), "up"),
    (re.compile(r"^(?P<base>.+?)\.lora_A(?:\.[\w-]+)?\.weight$"), "down"),
    (re.compile(r"^(?P<base>.+?)\.lora_B(?:\.[\w-]+)?\.weight$"), "up"),
    (re.compile(r"^(?P<base>.+?)_lora\.down\.weight$"), "down"),  # attn processors: to_q_lora.down
    (re.compile(r"^(?P<base>.+?)_lora\.up\.weight$"), "up"),
    (re.compile(r"^(?P<base>.+)\.alpha$"), "alpha"),
    (re.compile(r"^(?P<base>.+)\.(?P<role>hada_w[12]_[ab]|lokr_w[12](?:_[ab])?)$"), None),  # LyCORIS
)

_KOHYA = (("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder"),
          ("lora_unet_", "unet"))
_DOTTED = (("text_encoder_2.", "text_encoder_2"), ("text_encoder.", "text_encoder"), ("unet.", "unet"),
           ("model.diffusion_model.", "unet"), ("diffusion_model.", "unet"), ("lora_unet.", "unet"),
           ("text_encoders.clip_l.transformer.", "text_encoder"),
           ("text_encoders.clip_g.transformer.", "text_encoder_2"))
_UNET_STARTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.",
                "add_embedding.", "input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.")


def _split_component(base: str) -> tuple[str, str, str] | None:
    """(component, module key, naming) of a LoRA layer's base name, or None."""
    for prefix, comp in _KOHYA:
        if base.startswith(prefix):
            return comp, base[len(prefix):], "kohya"
    for prefix, comp in _DOTTED:
        if base.startswith(prefix):
            naming = "comfyui" if prefix.startswith(("diffusion_model.", "model.diffusion_model.", "text_encoders.")) \
                else "dotted"
            return comp, base[len(prefix):], naming
    if base.startswith(_UNET_STARTS):
        return "unet", base, "dotted"
    if base.startswith("text_model."):
        return "text_encoder", base, "dotted"
    return None


def _clean_dotted(comp: str, key: str) -> str:
    """diffusers' attention-processor spellings → module names."""
    key = key.replace(".processor.", ".")
    key = key.removesuffix(".processor")
    if comp == "unet":
        if key.endswith(".to_out"):
            key += ".0"
    else:
        for a, b in ((".to_q", ".q_proj"), (".to_k", ".k_proj"), (".to_v", ".v_proj"), (".to_out.0", ".out_proj"),
                     (".to_out", ".out_proj")):
            if key.endswith(a):
                key = key[: -len(a)] + b
                break
    return key


def _peft_scale(meta: dict | None, comp: str, key: str, rank: int) -> float:
    """Scale of a PEFT layer from diffusers' `lora_adapter_metadata` (LoraConfig per component)."""
    if not meta:
        return 1.0
    alpha = meta.get(f"{comp}.lora_alpha")
    for pat, a in (meta.get(f"{comp}.alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pat})$", key):
            alpha = a
            break
    if alpha is None:
        return 1.0
    if meta.get(f"{comp}.use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank


def parse_lora(sd: dict, name: str = "LoRA", metadata: dict | None = None) -> LoraFile:
    """Normalise a LoRA state dict (any supported format) into a LoraFile; clear errors otherwise."""
    keys = list(sd)
    for test, what in _UNSUPPORTED:
        if any(test(k) for k in keys):
            raise LoraError(f"{name} is {what}; VisionKit applies plain LoRAs (kohya, diffusers/PEFT, "
                            "LCM-LoRA) and plain LyCORIS LoHa / LoKr. Convert it to a plain LoRA, or use one.")
    groups: dict[str, dict] = {}
    unknown = []
    for k, v in sd.items():
        for pat, role in _ROLE_PATTERNS:
            m = pat.match(k)
            if m:
                g = groups.setdefault(m.group("base"), {})
                g[role or m.group("role")] = v
                if ".lora_A" in k or ".lora_B" in k:
                    g["peft"] = True
                break
        else:
            unknown.append(k)
    lora_like = [b for b, g in groups.items() if "down" in g or "up" in g or lycoris.kind_of(g)]
    if not lora_like:
        raise LoraError(f"{name} is not a LoRA: it looks like {identify.what_is(sd, exclude='lora')}. Put LoRA files "
                        "(.safetensors) in models/loras.")
    if unknown and len(unknown) > len(keys) // 2:
        raise LoraError(f"{name} mixes LoRA weights with other tensors ({', '.join(unknown[:3])} ...); "
                        f"it looks like {identify.what_is({k: sd[k] for k in unknown}, exclude='lora')}")
    layers, formats, foreign = [], set(), []
    for base, g in groups.items():
        lyco = lycoris.kind_of(g)
        if lyco:
            split = _split_component(base)
            if split is None:
                foreign.append(base)
                continue
            problem = lycoris.check_group(lyco, g, f"{name}: {base}")
            if problem:
                raise LoraError(problem)
            formats.add(lyco)
            layers.append(LoraLayer(split[0], split[1], None, None, lycoris.scale_of(lyco, g), lyco,
                                    lycoris.factors(lyco, g)))
            continue
        if "down" not in g and "up" not in g:
            continue  # a lone alpha
        if "down" not in g or "up" not in g:
            raise LoraError(f"{name} is incomplete: {base} has a LoRA {'down' if 'down' in g else 'up'} weight "
                            "but no matching " + ("up" if "down" in g else "down") + " weight (damaged file?)")
        split = _split_component(base)
        if split is None:
            foreign.append(base)
            continue
        comp, key, naming = split
        down, up = g["down"], g["up"]
        if down.ndim not in (2, 4) or up.ndim not in (2, 4) or up.shape[1] != down.shape[0]:
            raise LoraError(f"{name}: the LoRA weights of {base} have shapes {tuple(down.shape)} (down) and "
                            f"{tuple(up.shape)} (up), which do not pair up; the file is damaged or not a LoRA")
        rank = int(down.shape[0])
        if "alpha" in g:
            scale = float(g["alpha"].float().reshape(-1)[0]) / rank
        elif g.get("peft"):
            scale = _peft_scale(metadata, comp, key, rank)
        else:
            scale = 1.0
        if naming == "kohya":
            formats.add("kohya")
        elif naming == "comfyui":
            formats.add("comfyui")
        else:
            formats.add("peft" if g.get("peft") else "diffusers")
            key = _clean_dotted(comp, key)
        layers.append(LoraLayer(comp, key, down, up, scale))
    if foreign and not layers:
        raise LoraError(f"{name} is a LoRA for a model VisionKit does not run (layers like {foreign[0]}); it "
                        f"looks like {identify.what_is(sd, exclude='lora')}")
    if foreign:
        log.warning("VisionKit: %s: %d LoRA layers for unknown modules are ignored (e.g. %s)", name, len(foreign),
                    foreign[0])
    arch, reason = detect_lora_arch(layers, name)
    fmt = "kohya" if "kohya" in formats else sorted(formats)[0]
    if {"loha", "lokr"} & formats:
        fmt = "+".join(sorted({"loha", "lokr"} & formats))
    return LoraFile(name, fmt, tuple(layers), arch, reason)


# ------------------------------------------------------------------ architecture
_CROSS = re.compile(r"attn2[._]to_[kv]$")


def detect_lora_arch(layers, name: str = "LoRA") -> tuple[str | None, str]:
    """SD1.5 / SDXL from what the LoRA touches and its shapes; None when the file cannot tell."""
    comps = {l.component for l in layers}
    if "text_encoder_2" in comps:
        return "sdxl", "it has weights for a second text encoder (te2), which only SDXL has"
    if any(("add_embedding" in l.key or "label_emb" in l.key) for l in layers if l.component == "unet"):
        return "sdxl", "it has weights for SDXL's size/crop embedding (add_embedding)"
    dims = {l.dims()[1] for l in layers if l.component == "unet" and _CROSS.search(l.key)}
    if 1024 in dims:
        raise LoraError(f"{name} is a LoRA for Stable Diffusion 2.x (1024-wide cross-attention); VisionKit runs "
                        "SD1.5 and SDXL LoRAs")
    if 2048 in dims:
        return "sdxl", "its cross-attention layers are 2048 wide (SDXL's two text encoders)"
    if 768 in dims:
        return "sd15", "its cross-attention layers are 768 wide (SD1.5's text encoder)"
    te = {l.dims()[1] for l in layers if l.component == "text_encoder"}
    if 1024 in te:
        raise LoraError(f"{name} is a LoRA for Stable Diffusion 2.x (1024-wide text encoder); VisionKit runs SD1.5 "
                        "and SDXL LoRAs")
    return None, "the file does not say; checked against the pipeline's layers"
