"""LoRAs for SD1.5 / SDXL: parse once through the cache; patch in place once per stack, restore exactly.

Formats read (from .safetensors, or .pt/.bin with plain tensors; parsed by models/sd/lora_formats.py):
- kohya / A1111 (sd-scripts, LCM-LoRA, most community LoRAs): `lora_unet_<module>` / `lora_te_` /
  `lora_te1_` / `lora_te2_` + `.lora_down.weight`, `.lora_up.weight`, `.alpha`. The UNet module name may
  be in diffusers naming (`down_blocks_0_attentions_0_...`, kohya's SD1.5 and LCM-LoRA) or in the
  original LDM/sgm naming (`input_blocks_4_1_...`, kohya's SDXL); both resolve.
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (scale from the file's
  `lora_adapter_metadata` when present, else 1), older `...processor.to_q_lora.down.weight`,
  `.lora.down.weight`, `.lora_linear_layer.down.weight`, and `text_encoder.` / `text_encoder_2.` keys.
- ComfyUI-saved LoRAs (`diffusion_model.<LDM module>.lora_up.weight`).
- LyCORIS LoHa and LoKr (`.hada_w1_a` ... / `.lokr_w1` ...; models/sd/lora_lycoris.py), applied the same way.
Tucker-decomposed LoHa/LoKr, DoRA, OFT, IA3 and full-weight diffs are refused with a message saying so.

The cached value (`LoraFile`) is the normalised list of layers: (component, module name as written,
down, up, scale = alpha / rank). Module names are resolved against the actual model when applied:
a dotted diffusers/transformers name, the same flattened with `_` (kohya), or the LDM name of a UNet
module, all map to the module through a table built once per model object (`module_table`). This is
exact for any UNet layout (tiny test models included), where a fixed LDM → diffusers table is not.

Application (models/sd/lora_apply.py, where the choice is measured and explained): the stack a run asks for
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
import os
import threading
import weakref

import torch

from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import WeightsError, load_state_dict
from . import lora_apply as sd_lora_apply
from . import lora_lycoris as lycoris
from .lora_formats import LoraError, LoraFile, LoraLayer, parse_lora

log = logging.getLogger("visionkit")

KIND = "sd_lora"


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
    if layer.kind != "lora":
        delta = lycoris.delta(layer.kind, layer.factors, weight)
        if delta.numel() != weight.numel() or delta.shape[0] != weight.shape[0]:
            raise LoraError(f"{where}: the {layer.kind} changes a {tuple(delta.shape)} weight but the model's is "
                            f"{tuple(weight.shape)}: this LoRA was made for another model")
        return delta.reshape(weight.shape)
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
            a, _, b = layer.dims()
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

    `loras` are types.LoraRef (strength_unet / strength_text); an empty stack puts the original weights back.
    The caller holds the models' locks for the run through `patches` (an active models.core.patching.RunPatches);
    the stack stays applied after the run, recorded, until a run asks for another one (lora_apply).
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
        raise LoraError(str(ex)) from ex
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
