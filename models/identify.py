"""What a weights file is, from its tensor names and shapes: one answer for every loader's "wrong file" message.

People put files in the wrong folder or pick the wrong one in a dropdown all the time. Each loader detects its
own format; when that fails, it asks `what_is(sd)` for the plain-words answer ("a SAM (segment-anything)
checkpoint: it goes in models/sams, for 'VisionKit Load SAM Model'") and wraps it in its own sentence. Keeping
the identification in one place means every loader recognises every other loader's files, and the loader names
in the advice match the node display names.

`what_is(sd, exclude=...)` never raises: an unreadable or unknown layout becomes "an unknown model (first keys:
...)". `exclude` drops the caller's own kind (a loader that already failed to read its own format must not be
told "this is a SAM checkpoint" by a looser test of the same kind).
"""
from __future__ import annotations

from collections.abc import Callable

# the node display names (nodes/__init__.py) people see on the canvas
LOADERS = {
    "sam": ("sams", "VisionKit Load SAM Model"),
    "checkpoint": ("checkpoints", "VisionKit Load Pipeline (SD1.5 / SDXL)"),
    "lora": ("loras", "VisionKit Load LoRA"),
    "controlnet": ("controlnet", "VisionKit Load ControlNet"),
    "ipadapter": ("ipadapter", "VisionKit Load IP-Adapter"),
    "instantid": ("instantid", "VisionKit Load InstantID"),
    "vae": ("vae", "VisionKit Load Pipeline (SD1.5 / SDXL) as its vae_name"),
    "upscaler": ("upscale_models", "VisionKit Load Upscale Model"),
    "grounding_dino": ("grounding-dino", "VisionKit Load Grounding DINO Model"),
    "clip": ("clip_models", "VisionKit Load CLIP Model"),
    "clip_vision": ("clip_vision", "VisionKit Load IP-Adapter as its CLIP vision encoder"),
}


def _goes(kind: str) -> str:
    folder, loader = LOADERS[kind]
    return f"it goes in models/{folder}, for '{loader}'"


def _prefixed(keys, *prefixes) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _contains(keys, *parts) -> bool:
    return any(p in k for k in keys for p in parts)


def _upscaler(sd: dict) -> str | None:
    from .upscale_arch import describe_upscaler

    try:
        what = describe_upscaler(sd)
    except Exception:  # noqa: BLE001 - spandrel missing, or a layout it trips over: an identifier never fails
        return None
    if what is None:
        return None
    return what if "leaves it out" in what else f"{what}: {_goes('upscaler')}"


def _ip_adapter(sd: dict, keys) -> str | None:
    if not (_prefixed(keys, "image_proj.", "ip_adapter.") or _contains(keys, "to_k_ip", "to_v_ip")):
        return None
    proj_in = sd.get("image_proj.proj_in.weight")
    if proj_in is not None and getattr(proj_in, "shape", (0, 0))[-1] == 512 and _prefixed(keys, "image_proj.layers."):
        return f"InstantID's ip-adapter.bin (face-embedding resampler): {_goes('instantid')}"
    return f"IP-Adapter weights: {_goes('ipadapter')}"


# (kind, test(sd, keys) -> description or None), most specific first
_RULES: list[tuple[str, Callable]] = [
    ("sam", lambda sd, k: "a SAM 2 checkpoint, which VisionKit does not run yet (use an original SAM checkpoint)"
     if _prefixed(k, "image_encoder.trunk.", "memory_attention.", "sam_mask_decoder.") else None),
    ("sam", lambda sd, k: "an HQ-SAM checkpoint, which VisionKit does not run yet (use an original SAM checkpoint)"
     if _prefixed(k, "mask_decoder.hf_token", "mask_decoder.compress_vit_feat") else None),
    ("sam", lambda sd, k: f"a SAM (segment-anything) checkpoint: {_goes('sam')}"
     if _prefixed(k, "image_encoder.") and _prefixed(k, "mask_decoder.") else None),
    ("checkpoint", lambda sd, k: "a Stable Diffusion 3 / Flux / DiT model, which VisionKit does not run (it runs "
     "SD1.5 and SDXL)" if _contains(k, "joint_blocks.", "double_blocks.", "single_blocks.") else None),
    ("lora", lambda sd, k: f"a LoRA: {_goes('lora')}"
     if any(x.endswith(("lora_down.weight", "lora_A.weight", "lora.down.weight")) for x in k)
     or _prefixed(k, "lora_unet_", "lora_te") else None),
    ("controlnet", lambda sd, k: f"a ControlNet: {_goes('controlnet')}"
     if _prefixed(k, "control_model.", "input_hint_block.", "controlnet_cond_embedding.", "zero_convs.",
                  "controlnet_down_blocks.") else None),
    ("checkpoint", lambda sd, k: f"a full Stable Diffusion checkpoint: {_goes('checkpoint')}"
     if _prefixed(k, "model.diffusion_model.", "conditioner.embedders.", "cond_stage_model.") else None),
    ("ipadapter", lambda sd, k: _ip_adapter(sd, k)),
    ("vae", lambda sd, k: f"a VAE alone: {_goes('vae')}"
     if ({"encoder.conv_in.weight", "decoder.conv_in.weight"} <= set(k)
         or {"first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight"} <= set(k))
     else None),
    ("diffusers_unet", lambda sd, k: "a diffusers-format UNet alone (diffusion_pytorch_model.safetensors): use the "
     "whole diffusers folder, the one with model_index.json, from models/diffusers"
     if "conv_in.weight" in sd and _prefixed(k, "down_blocks.") and _prefixed(k, "time_embedding.") else None),
    # upscale models (ESRGAN in every layout, SwinIR, HAT, DAT, compact …): spandrel's core detectors
    ("upscaler", lambda sd, k: _upscaler(sd)),
    ("grounding_dino_hf", lambda sd, k: "the weights of a transformers-format Grounding DINO folder: keep the file "
     "inside its folder with config.json and the tokenizer files, and choose the folder in 'VisionKit Load "
     "Grounding DINO Model'" if _prefixed(k, "model.backbone.conv_encoder.", "model.text_backbone.") else None),
    ("grounding_dino", lambda sd, k: f"a detection model (Grounding DINO): {_goes('grounding_dino')}"
     if _prefixed(k, "transformer.encoder.", "backbone.", "module.transformer.", "module.backbone.")
     or _contains(k, "transformer.decoder") else None),
    ("clip", lambda sd, k: f"a full CLIP model (image and text towers): {_goes('clip')}"
     if (_prefixed(k, "visual.") and _prefixed(k, "token_embedding.", "text.", "transformer.resblocks."))
     or (_prefixed(k, "vision_model.") and _prefixed(k, "text_model.")) else None),
    ("clip_vision", lambda sd, k: f"a CLIP vision encoder (image tower only, as IP-Adapter uses): "
     f"{_goes('clip_vision')}" if _prefixed(k, "vision_model.", "visual.") or "visual_projection.weight" in sd
     else None),
    ("clip_text", lambda sd, k: "a CLIP text encoder only (as Stable Diffusion uses; ComfyUI keeps those in "
     "text_encoders)" if _prefixed(k, "text_model.", "token_embedding.", "transformer.resblocks.") else None),
    ("grounding_dino", lambda sd, k: "a BERT text encoder alone (Grounding DINO needs the whole detector)"
     if _prefixed(k, "embeddings.word_embeddings", "bert.embeddings") else None),
    ("textual_inversion", lambda sd, k: "a textual-inversion embedding"
     if _prefixed(k, "emb_params", "string_to_param", "clip_l", "clip_g") and len(k) <= 4 else None),
]


def what_is(sd: dict, exclude: tuple[str, ...] | str = ()) -> str:
    """Plain words for what the state dict is and where it belongs (never raises)."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    keys = list(sd)
    for kind, rule in _RULES:
        if kind in exclude:
            continue
        try:
            found = rule(sd, keys)
        except Exception:  # noqa: BLE001 - a describer must never be the thing that crashes
            found = None
        if found:
            return found
    if _prefixed(keys, "down_blocks.", "mid_block.", "up_blocks.", "encoder.", "decoder.", "text_model."):
        return "model weights of a diffusers component (a UNet, VAE or text encoder)"
    return f"an unknown model (first keys: {', '.join(keys[:3]) or 'none'})"
