"""LoRAs for SD1.5 / SDXL: parse once through the cache; patch in place once per stack, restore exactly.

Formats read (from .safetensors, or .pt/.bin with plain tensors):
- kohya / A1111 (sd-scripts, LCM-LoRA, most community LoRAs): `lora_unet_<module>` / `lora_te_` /
  `lora_te1_` / `lora_te2_` + `.lora_down.weight`, `.lora_up.weight`, `.alpha`. The UNet module name may
  be in diffusers naming (`down_blocks_0_attentions_0_...`, kohya's SD1.5 and LCM-LoRA) or in the
  original LDM/sgm naming (`input_blocks_4_1_...`, kohya's SDXL); both resolve.
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (scale from the file's
  `lora_adapter_metadata` when present, else 1), older `...processor.to_q_lora.down.weight`,
  `.lora.down.weight`, `.lora_linear_layer.down.weight`, and `text_encoder.` / `text_encoder_2.` keys.
- ComfyUI-saved LoRAs (`diffusion_model.<LDM module>.lora_up.weight`).
LoHa / LoKr / DoRA / full-weight diffs are refused with a message saying so.

The cached value (`LoraFile`) is the normalised list of layers: (component, module name as written,
down, up, scale = alpha / rank). Module names are resolved against the actual model when applied:
a dotted diffusers/transformers name, the same flattened with `_` (kohya), or the LDM name of a UNet
module, all map to the module through a table built once per model object (`module_table`). This is
exact for any UNet layout (tiny test models included), where a fixed LDM → diffusers table is not.

Application (models/sd_lora_apply.py, where the choice is measured and explained): the stack a run asks for
is patched into the cached model IN PLACE, once per change of (model, stack, strengths), as
W' = W + Σ strength · scale · (up @ down) (conv LoRAs reshaped to the kernel), computed in float32 on the
weight's device one weight at a time; the originals of only the patched weights are kept (CPU copies for an
accelerator model, an anonymous spill file for a CPU model) and copied back bit-identically when a run asks
for another stack (none included). A repeated run with the same stack pays nothing; memory does not grow
with a second copy of the model. Strength 0 skips the LoRA. Callers hold the model's lock for the run:

    with RunPatches(comps.text_encoder, comps.text_encoder_2) as p:   # prompt encoder
        apply_lora_text(p, comps, handle); encode...                   # (no LoRA: the originals are put back)
    with RunPatches(comps.unet) as p:                                  # sampler
        apply_lora_unet(p, comps, handle); denoise...
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import weakref
from dataclasses import dataclass, field

import torch

from . import sd_lora_apply
from .cache import Loaded, ModelSpec, get_cache
from .sd_types import ARCH_NAMES, GenerationError
from .weights import WeightsError, load_state_dict

log = logging.getLogger("visionkit")

KIND = "sd_lora"
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


class LoraError(GenerationError):
    """A LoRA file that cannot be used (wrong kind of file, unsupported variant, does not fit)."""


# ------------------------------------------------------------------ the parsed file
@dataclass(eq=False)
class LoraLayer:
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    key: str  # module name as written (dotted diffusers/LDM/transformers name, or kohya's flattened name)
    down: torch.Tensor  # (rank, in) or (rank, in, kh, kw)
    up: torch.Tensor  # (out, rank) or (out, rank, 1, 1)
    scale: float  # alpha / rank (1 when the file has no alpha)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(eq=False)
class LoraFile:
    name: str
    format: str  # "kohya" | "peft" | "diffusers" | "comfyui"
    layers: tuple
    arch: str | None  # "sd15" | "sdxl" | None (not decidable from the file: decided against the pipeline)
    arch_reason: str = ""
    meta: dict = field(default_factory=dict)

    def components(self) -> list[str]:
        return [c for c in COMPONENTS if any(l.component == c for l in self.layers)]

    def nbytes(self) -> int:
        return sum(l.down.numel() * l.down.element_size() + l.up.numel() * l.up.element_size() for l in self.layers)

    def describe(self) -> str:
        parts = [f"{sum(1 for l in self.layers if l.component == c)} {c} layers" for c in self.components()]
        arch = ARCH_NAMES.get(self.arch, self.arch) if self.arch else "architecture from the pipeline"
        return f"{self.format} LoRA, {arch}, " + ", ".join(parts)


# ------------------------------------------------------------------ what a non-LoRA file is
def describe_sd_file(sd: dict, exclude: str = "lora") -> str:
    """What a weights file probably is, in words (for 'wrong file' messages); see models/identify.py."""
    from .identify import what_is

    return what_is(sd, exclude=exclude)


# ------------------------------------------------------------------ parsing
_UNSUPPORTED = (  # (key test, what the file is)
    (lambda k: "hada_w1_a" in k or "hada_w2_a" in k, "a LoHa (LyCORIS) file"),
    (lambda k: "lokr_w1" in k or "lokr_w2" in k, "a LoKr (LyCORIS) file"),
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
                            "LCM-LoRA) only. Convert it to a plain LoRA, or use a plain LoRA.")
    groups: dict[str, dict] = {}
    unknown = []
    for k, v in sd.items():
        for pat, role in _ROLE_PATTERNS:
            m = pat.match(k)
            if m:
                g = groups.setdefault(m.group("base"), {})
                g[role] = v
                if ".lora_A" in k or ".lora_B" in k:
                    g["peft"] = True
                break
        else:
            unknown.append(k)
    lora_like = [b for b, g in groups.items() if "down" in g or "up" in g]
    if not lora_like:
        raise LoraError(f"{name} is not a LoRA: it looks like {describe_sd_file(sd)}. Put LoRA files "
                        "(.safetensors) in models/loras.")
    if unknown and len(unknown) > len(keys) // 2:
        raise LoraError(f"{name} mixes LoRA weights with other tensors ({', '.join(unknown[:3])} ...); "
                        f"it looks like {describe_sd_file({k: sd[k] for k in unknown})}")
    layers, formats, foreign = [], set(), []
    for base, g in groups.items():
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
                        f"looks like {describe_sd_file(sd)}")
    if foreign:
        log.warning("VisionKit: %s: %d LoRA layers for unknown modules are ignored (e.g. %s)", name, len(foreign),
                    foreign[0])
    arch, reason = detect_lora_arch(layers, name)
    fmt = "kohya" if "kohya" in formats else sorted(formats)[0]
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
    dims = {int(l.down.shape[1]) for l in layers if l.component == "unet" and _CROSS.search(l.key)}
    if 1024 in dims:
        raise LoraError(f"{name} is a LoRA for Stable Diffusion 2.x (1024-wide cross-attention); VisionKit runs "
                        "SD1.5 and SDXL LoRAs")
    if 2048 in dims:
        return "sdxl", "its cross-attention layers are 2048 wide (SDXL's two text encoders)"
    if 768 in dims:
        return "sd15", "its cross-attention layers are 768 wide (SD1.5's text encoder)"
    te = {int(l.down.shape[1]) for l in layers if l.component == "text_encoder"}
    if 1024 in te:
        raise LoraError(f"{name} is a LoRA for Stable Diffusion 2.x (1024-wide text encoder); VisionKit runs SD1.5 "
                        "and SDXL LoRAs")
    return None, "the file does not say; checked against the pipeline's layers"


# ------------------------------------------------------------------ resolving module names
_RESNET_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def unet_ldm_prefixes(unet) -> dict[str, str]:
    """diffusers UNet module prefix → the original LDM/sgm prefix, from the model's own structure."""
    m = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
         "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
         "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    idx = 1
    for b, blk in enumerate(unet.down_blocks):
        attns = getattr(blk, "attentions", None)
        for l in range(len(blk.resnets)):
            m[f"down_blocks.{b}.resnets.{l}"] = f"input_blocks.{idx}.0"
            if attns is not None and l < len(attns):
                m[f"down_blocks.{b}.attentions.{l}"] = f"input_blocks.{idx}.1"
            idx += 1
        if getattr(blk, "downsamplers", None):
            m[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{idx}.0.op"
            idx += 1
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        m["mid_block.resnets.0"] = "middle_block.0"
        if getattr(mid, "attentions", None):
            m["mid_block.attentions.0"] = "middle_block.1"
            m["mid_block.resnets.1"] = "middle_block.2"
        elif len(mid.resnets) > 1:
            m["mid_block.resnets.1"] = "middle_block.1"
    idx = 0
    for b, blk in enumerate(unet.up_blocks):
        attns = getattr(blk, "attentions", None)
        n = len(blk.resnets)
        for l in range(n):
            m[f"up_blocks.{b}.resnets.{l}"] = f"output_blocks.{idx}.0"
            if attns is not None and l < len(attns):
                m[f"up_blocks.{b}.attentions.{l}"] = f"output_blocks.{idx}.1"
            if l == n - 1 and getattr(blk, "upsamplers", None):
                m[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{idx}.{2 if attns else 1}.conv"
            idx += 1
    return m


def unet_ldm_name(name: str, prefixes: dict[str, str]) -> str | None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        p = ".".join(parts[:cut])
        if p in prefixes:
            rest = ".".join(parts[cut:])
            if ".resnets." in f".{p}." and rest:
                head, _, tail = rest.partition(".")
                rest = dict(_RESNET_LDM).get(head, head) + (f".{tail}" if tail else "")
            return prefixes[p] + (f".{rest}" if rest else "")
    return None


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def module_table(module, component: str) -> dict[str, str]:
    """Every name a LoRA may use for a Linear/Conv2d of `module` → its module name (memoised per model)."""
    with _TABLES_LOCK:
        t = _TABLES.get(module)
        if t is not None:
            return t
    table: dict[str, str] = {}
    prefixes = unet_ldm_prefixes(module) if component == "unet" and hasattr(module, "down_blocks") else None
    for n, mod in module.named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        aliases = [n]
        if prefixes is not None:
            ldm = unet_ldm_name(n, prefixes)
            if ldm:
                aliases.append(ldm)
        elif n.startswith("text_model."):
            aliases.append(n[len("text_model."):])
        else:
            aliases.append("text_model." + n)
        for a in aliases:
            table.setdefault(a, n)
            table.setdefault(a.replace(".", "_"), n)
    with _TABLES_LOCK:
        _TABLES[module] = table
    return table


# ------------------------------------------------------------------ deltas
def layer_delta(layer: LoraLayer, weight: torch.Tensor, where: str = "") -> torch.Tensor:
    """up @ down (float32, on the weight's device) in the weight's shape; scale not applied."""
    dev = weight.device
    up = layer.up.to(device=dev, dtype=torch.float32)
    down = layer.down.to(device=dev, dtype=torch.float32)
    if up.ndim == 4 and up.shape[2:] != (1, 1):
        raise LoraError(f"{where}: LoRA up weight with a {tuple(up.shape[2:])} kernel is not supported")
    delta = up.flatten(1) @ down.flatten(1)  # (out, in·kh·kw)
    if delta.numel() != weight.numel() or delta.shape[0] != weight.shape[0]:
        raise LoraError(f"{where}: the LoRA changes a {tuple(delta.shape)} weight but the model's is "
                        f"{tuple(weight.shape)}: this LoRA was made for another model")
    return delta.reshape(weight.shape)


def _resolve(lf: LoraFile, component: str, module) -> tuple[list, list]:
    table = module_table(module, component)
    found, missing = [], []
    for layer in lf.layers:
        if layer.component != component:
            continue
        target = table.get(layer.key)
        (found if target else missing).append((layer, target))
    return found, missing


_FITS: dict = {}  # (id(lf), id(comps)) -> (weakref(lf), weakref(comps), notes): the answer for cached objects
_FITS_LOCK = threading.Lock()


def check_fits(lf: LoraFile, comps) -> list[str]:
    """Problems applying `lf` to the pipeline's components ([] = fits). Raises for a shape mismatch.

    Both objects live in the shared cache, so the answer is remembered for this pair of objects (a reloaded
    file or pipeline is a new object and is checked again): the LoRA loader of a cached workflow run costs a
    dictionary lookup, not a walk over every layer.
    """
    key = (id(lf), id(comps))
    with _FITS_LOCK:
        hit = _FITS.get(key)
        if hit is not None and hit[0]() is lf and hit[1]() is comps:
            return list(hit[2])
    notes = _check_fits(lf, comps)
    with _FITS_LOCK:
        for k in [k for k, v in _FITS.items() if v[0]() is None or v[1]() is None]:
            del _FITS[k]
        _FITS[key] = (weakref.ref(lf), weakref.ref(comps), tuple(notes))
    return notes


def _check_fits(lf: LoraFile, comps) -> list[str]:
    notes = []
    for comp in lf.components():
        module = getattr(comps, comp, None)
        n = sum(1 for l in lf.layers if l.component == comp)
        if module is None:
            raise LoraError(f"{lf.name} has {n} layers for {comp}, which this pipeline does not have "
                            "(a second text encoder: an SDXL LoRA on an SD1.5 pipeline)")
        found, missing = _resolve(lf, comp, module)
        if not found:
            raise LoraError(f"{lf.name} does not fit this pipeline: none of its {n} {comp} layers exists in the "
                            f"pipeline's {comp} (e.g. {missing[0][0].key}); it was made for another model")
        for layer, target in found:
            w = module.get_submodule(target).weight
            a, b = layer.up.shape[0], layer.down[0].numel()
            if a * b != w.numel() or a != w.shape[0]:
                raise LoraError(f"{lf.name} does not fit this pipeline: {comp} {target} is {tuple(w.shape)} but the "
                                f"LoRA changes a ({a}, {b}) weight; it was made for another model")
        if missing:
            notes.append(f"{len(missing)} of {n} {comp} layers have no matching module (e.g. {missing[0][0].key}) "
                         "and are ignored")
    return notes


def _plan(refs, which: str, component: str, module) -> dict:
    """{parameter name: [(layer, strength · scale, where), ...]} for `refs` on one module, in stack order."""
    cache = get_cache()
    plan: dict = {}
    for ref in refs:
        strength = float(ref.strength_unet if which == "unet" else ref.strength_text)
        lf = cache.load(ref.spec).value
        if not any(l.component == component for l in lf.layers):
            continue
        found, missing = _resolve(lf, component, module)
        if missing and not found:
            raise LoraError(f"{lf.name} does not fit this pipeline's {component} (no layer matches, e.g. "
                            f"{missing[0][0].key})")
        for layer, target in found:
            plan.setdefault(f"{target}.weight", []).append((layer, strength * layer.scale,
                                                            f"{lf.name} {component} {target}"))
    return plan


def _term_delta(term, weight: torch.Tensor) -> torch.Tensor:
    layer, factor, where = term
    return layer_delta(layer, weight, where) * factor


def apply_loras(patches, comps, loras, which: str = "unet") -> int:
    """Give the pipeline's UNet ("unet") or text encoders ("text") exactly the stack `loras` for this run.

    `loras` are sd_types.LoraRef (strength_unet / strength_text); an empty stack puts the original weights back.
    The caller holds the models' locks for the run through `patches` (an active models.patching.RunPatches);
    the stack stays applied after the run, recorded, until a run asks for another one (sd_lora_apply).
    Returns the number of weights patched.
    """
    if which not in ("unet", "text"):
        raise ValueError(f"which must be 'unet' or 'text', not {which!r}")
    targets = ("unet",) if which == "unet" else ("text_encoder", "text_encoder_2")
    refs = [r for r in loras or () if (r.strength_unet if which == "unet" else r.strength_text) != 0]
    cache = get_cache()
    count = 0
    for comp in targets:
        module = getattr(comps, comp, None)
        if module is None:
            continue
        key = []
        for ref in refs:
            entry = cache.load(ref.spec)  # parsed once; CPU tensors, nothing to move or pin
            if any(l.component == comp for l in entry.value.layers):
                key.append((entry.key, id(entry.value),
                            float(ref.strength_unet if which == "unet" else ref.strength_text)))
        count += sd_lora_apply.ensure(module, tuple(key), lambda c=comp, m=module: _plan(refs, which, c, m),
                                      _term_delta)
    return count


def apply_lora_unet(patches, comps, handle) -> int:
    """The sampler's call: the pipeline handle's LoRAs on the UNet (see apply_loras); no LoRA restores."""
    return apply_loras(patches, comps, getattr(handle, "loras", ()), "unet")


def apply_lora_text(patches, comps, handle) -> int:
    """The prompt encoder's call: the handle's LoRAs on text encoder 1 (and 2 for SDXL); none restores."""
    return apply_loras(patches, comps, getattr(handle, "loras", ()), "text")


def apply_no_lora_text(patches, comps) -> int:
    """The prompt encoder's call for a pipeline without LoRAs: the text encoders' original weights."""
    return apply_loras(patches, comps, (), "text")


# ------------------------------------------------------------------ loading through the cache
def _metadata(path: str) -> dict | None:
    if not path.lower().endswith((".safetensors", ".sft")):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("lora_adapter_metadata")
        return json.loads(raw) if raw else None
    except Exception:  # metadata is optional
        return None


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path)
    if os.path.isdir(spec.path):
        raise LoraError(f"{name} is a folder; a LoRA is one file (.safetensors)")
    try:
        sd = load_state_dict(spec.path)
    except WeightsError as ex:
        raise LoraError(str(ex)) from None
    lf = parse_lora(sd, name, _metadata(spec.path))
    return Loaded(lf, meta={"arch": lf.arch or "?", "format": lf.format, "layers": len(lf.layers),
                            "device": "cpu"}, nbytes=lf.nbytes())


def lora_spec(path: str) -> ModelSpec:
    return ModelSpec(kind=KIND, path=path, build=_build)


def load_lora(path: str) -> tuple[ModelSpec, LoraFile]:
    """Parse (or find in the cache) a LoRA file: (spec, LoraFile)."""
    spec = lora_spec(path)
    entry = get_cache().load(spec)
    return spec, entry.value
