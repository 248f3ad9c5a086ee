"""The sampler's guards against runs that cannot finish: a memory pre-check and cancel checks inside a step.

Issue 19: the largest size the validator allows (16384×16384) ran past 400 s inside one call and ComfyUI's
Cancel did nothing for minutes. Two guards, both per run and local to the sampler:

- `check_memory(...)`: before anything is allocated, a LOWER-BOUND estimate of the run's peak memory on the
  chosen device is compared with what is free there (CUDA: torch.cuda.mem_get_info plus what torch's
  allocator holds unused; CPU: psutil's available memory, else /proc/meminfo's MemAvailable). A run whose
  estimate does not fit is refused with the estimate in the message. The estimate counts only what must
  exist at once: the UNet's largest activations (the level-0 feature maps, skip connections and the
  transformer's feed-forward at the first attention level, for the CFG-doubled batch) and the VAE decoder's
  full-resolution feature maps (one image at a time, as decode_latents runs). Being a lower bound, it never
  refuses a run that would fit; it refuses the hopeless ones early. VISIONKIT_SKIP_MEMORY_CHECK=1 turns it off
  (e.g. on a machine with a large swap).
- `interruptible(*modules)`: while the run holds it, every attention and ResNet block of the UNet / VAE checks
  ComfyUI's interrupt flag before it runs (a forward pre-hook, removed when the run ends, fails or is
  cancelled), so Cancel is honoured within one block, not only between steps. Inside one attention call, the
  UNet's plain (diffusers AttnProcessor2_0) attention layers are swapped, for the run only, for one that
  splits the queries into chunks of ATTN_CHUNK_TOKENS rows when the sequence is longer, checking Cancel
  between chunks. Query rows are independent in attention, so the result is the same (a layer with a group
  norm, a spatial norm or a mask, and any other processor, e.g. IP-Adapter's, is left as it is).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from ..core import host
from .types import GenerationError

UNET_LEVEL0_MAPS = 8  # level-0 feature maps alive at once in the UNet (skips, the up block's concat, resnet temps)
FF_FACTOR = 8  # a transformer's GEGLU feed-forward: 2 × 4 × the channels, per token
VAE_MAPS = 3  # full-resolution maps alive at once in the VAE decoder (input, norm, conv output)
ATTN_CHUNK_TOKENS = 4096  # query rows per attention chunk (only longer sequences are split: 1024² SD1.5 and up)
CANCEL_BLOCKS = ("Attention", "ResnetBlock2D", "Transformer2DModel", "UNetMidBlock2D", "UNetMidBlock2DCrossAttn")


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB"


def estimate_peak_bytes(unet_config, vae_config, height: int, width: int, batch: int, cfg: bool,
                        unet_bytes: int = 4, vae_bytes: int = 4) -> dict:
    """A lower bound of the sampler's peak memory in bytes: {"unet", "vae", "peak"} (see the module docstring)."""
    vae_ch = list(getattr(vae_config, "block_out_channels", None) or [128, 256, 512, 512])
    factor = 2 ** (len(vae_ch) - 1)
    h, w = max(1, height // factor), max(1, width // factor)
    b = batch * (2 if cfg else 1)
    ch = list(getattr(unet_config, "block_out_channels", None) or [320, 640, 1280, 1280])
    kinds = list(getattr(unet_config, "down_block_types", None) or [])
    tokens0 = h * w
    unet = UNET_LEVEL0_MAPS * b * ch[0] * tokens0 * unet_bytes
    for level, kind in enumerate(kinds):
        if "Attn" in kind:  # the first attention level: q, k, v, out and the feed-forward's hidden states
            tokens = tokens0 // (4 ** level)
            unet += (4 + FF_FACTOR) * b * ch[min(level, len(ch) - 1)] * tokens * unet_bytes
            break
    vae = 0
    for level in range(len(vae_ch)):  # decoder level l runs at full/2^l; its input comes from level l+1's upsampler
        c = max(vae_ch[level], vae_ch[min(level + 1, len(vae_ch) - 1)])
        vae = max(vae, VAE_MAPS * c * (height * width // (4 ** level)) * vae_bytes)
    return {"unet": unet, "vae": vae, "peak": max(unet, vae)}


def available_bytes(device) -> int | None:
    """Free memory on `device` in bytes, or None when it cannot be told (then nothing is refused)."""
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            held = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(free + max(held, 0))
        except Exception:  # noqa: BLE001
            return None
    if kind != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(comps, device, dtype, height: int, width: int, batch: int, cfg: bool, vae_dtype=None) -> dict:
    """Refuse (GenerationError) a run whose lower-bound peak does not fit in the free memory of `device`."""
    import torch

    est = estimate_peak_bytes(comps.unet.config, comps.vae.config, height, width, batch, cfg,
                              torch.empty(0, dtype=dtype).element_size(),
                              torch.empty(0, dtype=vae_dtype or dtype).element_size())
    if os.environ.get("VISIONKIT_SKIP_MEMORY_CHECK", "").strip() not in ("", "0"):
        return est
    free = available_bytes(device)
    if free is not None and est["peak"] > free:
        kind = getattr(device, "type", str(device))
        raise GenerationError(
            f"a {width}×{height} image (batch {batch}{', ×2 for guidance' if cfg else ''}) needs at least about "
            f"{_gb(est['peak'])} of {'GPU' if kind == 'cuda' else 'RAM'} memory for the sampler (UNet "
            f"{_gb(est['unet'])}, VAE decode {_gb(est['vae'])}), but only {_gb(free)} is free on {device}: use a "
            "smaller width/height or batch_size and upscale the result (VisionKit Upscale), or free memory "
            "(set VISIONKIT_SKIP_MEMORY_CHECK=1 to run anyway)")
    return est


def _chunked_processor():
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    class ChunkedAttnProcessor(AttnProcessor2_0):
        """AttnProcessor2_0 over query chunks, with a Cancel check between them (same arguments as its parent,
        which diffusers' Attention.forward reads from the signature)."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            n = ATTN_CHUNK_TOKENS
            if (hidden_states.ndim != 3 or hidden_states.shape[1] <= n or attention_mask is not None
                    or attn.group_norm is not None or attn.spatial_norm is not None
                    or (encoder_hidden_states is None and attn.norm_cross)):
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args,
                                        **kwargs)
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            out = []
            for start in range(0, hidden_states.shape[1], n):
                host.throw_if_cancelled()
                out.append(super().__call__(attn, hidden_states[:, start:start + n], context, None, temb))
            return torch.cat(out, dim=1)

    return AttnProcessor2_0, ChunkedAttnProcessor()


@contextmanager
def interruptible(*modules):
    """Check ComfyUI's Cancel before every attention / ResNet block of `modules` (and between the query chunks
    of long plain attention) while the context is open; everything is restored when it closes."""
    def check(_module, _args):
        host.throw_if_cancelled()

    handles, swapped = [], []
    try:
        plain, chunked = _chunked_processor()
        for m in modules:
            if m is None:
                continue
            for sub in m.modules():
                if type(sub).__name__ in CANCEL_BLOCKS:
                    handles.append(sub.register_forward_pre_hook(check))
                if type(getattr(sub, "processor", None)) is plain and sub.group_norm is None:
                    swapped.append((sub, sub.processor))
                    sub.processor = chunked
        yield
    finally:
        for h in handles:
            h.remove()
        for sub, proc in swapped:
            sub.processor = proc
