"""The tiled upscale engine: seamless equal-size tiles, batching, alpha, any outscale, progress, cancel.

It runs any network that maps a (N, 3, h, w) 0..1 batch to (N, 3, h * scale, w * scale): a loaded
`UpscaleModel` (spandrel, see arch.py; its size rules: multiple_of, minimum, square) or a plain torch
module (its scale then comes from `scale=` or its `scale` / `upscale` attribute). The windows and where
their outputs go are a TilePlan (tile_plan.py); this module checks the options and memory and runs the plan.
"""
from __future__ import annotations

import math

from ..core import errors
from ..core.cache import ModelSpec, get_cache
from ..core.errors import VisionKitError
from .tile_plan import TilePlan

ALPHA_MODES = ("network", "bicubic", "bilinear")
DEFAULT_TILE = 512
DEFAULT_TILE_PAD = 16
MIN_TILE = 32
MAX_TILE_BATCH = 64


class UpscaleInputError(VisionKitError):
    """Bad options or images for the upscale engine; the message says what was wrong and how to fix it."""


def network_scale(net) -> int:
    """The upscale factor of a network (UpscaleModel.scale; a torch module's scale / upscale attribute)."""
    for attr in ("scale", "upscale"):
        v = getattr(net, attr, None)
        if isinstance(v, int) and v >= 1:
            return v
    raise UpscaleInputError(f"{type(net).__name__} does not say its scale; pass scale=")


def input_multiple(net) -> int:
    """What the input's height and width must divide by: an UpscaleModel says (spandrel's multiple_of; the
    pixel-unshuffle factor of Real-ESRGAN x2 / x1); a plain module: its shuffle_factor, else 1."""
    for attr in ("multiple", "shuffle_factor"):
        v = getattr(net, attr, None)
        if isinstance(v, int) and v >= 1:
            return v
    return 1


def _module(net):
    """The torch module inside an UpscaleModel (or the module itself)."""
    return getattr(net, "module", net)


def available_bytes(device) -> int | None:
    """Free memory for a run: CUDA's free plus what torch holds unused; on CPU the kernel's MemAvailable.
    None when unknown (then nothing is refused)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return None
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tile_bytes(net, window_h: int, window_w: int, scale: int, batch: int = 1) -> int:
    """A coarse estimate of the memory one network call on `batch` windows takes: a dozen feature maps of the
    first convolution's width at the input resolution (RRDBNet's dense blocks, a transformer's MLP) and three
    64-channel maps at the output resolution (the upsampling tail: interpolated, convolved, the next conv's
    output). RRDBNet x4plus by hand: ~13 KB per input pixel in fp32; this says 15."""
    import torch

    _, dtype = _net_device_dtype(net)
    feat = 64
    for mod in _module(net).modules():
        if isinstance(mod, torch.nn.Conv2d):
            feat = max(feat, int(mod.out_channels))
            break
    elem = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    return int(batch * elem * window_h * window_w * (12 * feat + 3 * 64 * scale * scale))


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def output_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """(height, width) after --outscale, rounded like Real-ESRGAN (int() of the product)."""
    return int(height * outscale), int(width * outscale)


def _net_device_dtype(net):
    import torch

    for p in net.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def auto_tile_batch(net, window_h: int, window_w: int, scale: int, device) -> int:
    """How many windows to run at once: 1 on CPU (batching buys nothing there and costs memory);
    on CUDA what fits in half the free memory, by a coarse estimate of the activations (an OOM still
    halves the batch and retries)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 1
    per_tile = tile_bytes(net, window_h, window_w, scale)
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return 1
    return int(max(1, min(16, (free // 2) // max(per_tile, 1))))


def upscale_tensor(net, image, *, scale: int | None = None, outscale: float | None = None,
                   tile: int = DEFAULT_TILE, tile_pad: int = DEFAULT_TILE_PAD, pre_pad: int = 0,
                   tile_batch: int = 0, alpha_mode: str = "network", progress=None):
    """Upscale an IMAGE (float32 B,H,W,C in 0..1; RGB or RGBA) with an UpscaleModel (or a torch module).

    - scale: the network's factor (read from the network when None);
    - outscale: final factor; when it differs from `scale` the network's output is resized with
      Lanczos (as Real-ESRGAN's --outscale) to int(h * outscale) x int(w * outscale); None or 0 = scale;
    - tile: core size of a tile in input pixels, 0 = the whole image in one go; tile_pad: context read
      around each tile (Real-ESRGAN's tile_pad); pre_pad: Real-ESRGAN's pre_pad (reflect, bottom/right);
    - tile_batch: windows per network call, 0 = automatic;
    - alpha_mode: an RGBA image's alpha goes through the network ("network", as Real-ESRGAN's
      alpha_upsampler='realesrgan'), or is resized ("bicubic", "bilinear");
    - progress: a callback(done, total) called once per tile (ComfyUI's bar is used when inside it).

    The network runs in its own dtype on its own device (fp16 on CUDA by the loader's "auto"); the
    result is a new float32 CPU IMAGE. Cancelling (ComfyUI's interrupt) raises between tiles.
    """
    from ..core.imageops import check_image

    image = check_image(image)
    scale = int(scale) if scale else network_scale(net)
    tile, tile_pad, pre_pad = int(tile), int(tile_pad), int(pre_pad)
    if tile < 0 or tile_pad < 0 or pre_pad < 0:
        raise UpscaleInputError(f"tile ({tile}), tile_pad ({tile_pad}) and pre_pad ({pre_pad}) must be >= 0 "
                                "(tile 0 = the whole image at once)")
    if alpha_mode not in ALPHA_MODES:
        raise UpscaleInputError(f"alpha mode {alpha_mode!r} is not one of {', '.join(ALPHA_MODES)}")
    if outscale is not None and (math.isnan(outscale) or outscale < 0):
        raise UpscaleInputError(f"outscale {outscale} must be a positive number (0 = the model's own x{scale})")
    outscale = float(outscale) if outscale else float(scale)

    b, h, w, c = image.shape
    out_h, out_w = output_size(h, w, outscale)
    if out_h < 1 or out_w < 1:
        raise UpscaleInputError(f"outscale {outscale} turns the {w}x{h} image into {out_w}x{out_h} pixels; "
                                "use a larger outscale")
    plan = TilePlan.build(image.shape, scale=scale, tile=tile, tile_pad=tile_pad, pre_pad=pre_pad,
                          alpha_mode=alpha_mode, multiple=input_multiple(net),
                          minimum=int(getattr(net, "minimum", 0) or 0), square=bool(getattr(net, "square", False)),
                          whole_image=getattr(net, "tiling", "supported") == "internal")

    device, _dtype = _net_device_dtype(net)
    wh, ww = plan.window_h, plan.window_w
    batch_n = int(tile_batch) if tile_batch and tile_batch > 0 else auto_tile_batch(net, wh, ww, scale, device)
    batch_n = max(1, min(batch_n, MAX_TILE_BATCH))
    check_memory(net, device, b, h, w, c, scale, (out_h, out_w), wh, ww, batch_n, plan.tile)
    out = _output_buffer(b, h, w, c, scale)
    _run(net, image, plan, out, batch_n, progress)
    if (out_h, out_w) != (h * scale, w * scale):
        out = _resize_lanczos(out, out_h, out_w)
    return out


def _output_buffer(b: int, h: int, w: int, c: int, scale: int):
    import torch

    nbytes = b * h * scale * w * scale * c * 4
    try:
        return torch.empty((b, h * scale, w * scale, c), dtype=torch.float32)
    except RuntimeError as ex:
        raise UpscaleInputError(f"the upscaled image ({b}x{w * scale}x{h * scale}x{c}) needs {_gib(nbytes)} "
                                "of memory, more than is free; upscale fewer or smaller images") from ex


def _run(net, image, plan: TilePlan, out, batch_n: int, progress) -> None:
    """Run the plan's jobs through the network `batch_n` windows at a time, placing each output in `out`.
    A CUDA out-of-memory halves the batch and retries; at one window it goes to ComfyUI with our hint."""
    import torch

    from ..core import host

    device, dtype = _net_device_dtype(net)
    wh, ww, tile = plan.window_h, plan.window_w, plan.tile
    jobs = plan.jobs()
    total = len(jobs)
    bar = host.Progress(total, progress)
    i = 0
    with torch.inference_mode():
        while i < total:
            host.throw_if_cancelled()
            chunk = jobs[i:i + batch_n]
            x = torch.stack([plan.window(image, j) for j in chunk]).to(device=device, dtype=dtype)
            if device.type == "cpu":  # oneDNN's convolutions are faster on NHWC (~5-10% here)
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                y = net(x)
            except torch.cuda.OutOfMemoryError as ex:
                del x
                torch.cuda.empty_cache()
                if batch_n > 1:
                    batch_n = max(1, batch_n // 2)
                    continue
                errors.reraise_oom(ex, f"VisionKit: out of GPU memory upscaling one {ww}x{wh} tile; lower tile_size "
                                       f"(now {tile or 'whole image'}) and run again.")
            except RuntimeError as ex:
                if errors.is_out_of_memory(ex) or ("alloc" in str(ex).lower() and "memory" in str(ex).lower()):
                    errors.reraise_oom(ex, f"VisionKit: out of memory upscaling {len(chunk)} {ww}x{wh} tile(s); "
                                           f"lower tile_size (now {tile or 'whole image'}) or tile_batch.")
                raise
            del x
            y = y.float().clamp_(0, 1)
            for k, job in enumerate(chunk):
                plan.place(out, image, job, y[k])
            del y
            for _ in chunk:
                bar.update(1)  # also raises ComfyUI's interrupt when the user cancelled
            i += len(chunk)


def check_memory(net, device, b: int, h: int, w: int, c: int, scale: int, out_hw: tuple[int, int],
                 wh: int, ww: int, batch_n: int, tile: int) -> None:
    """Refuse, before any work, a run whose estimate does not fit in free memory (saying the estimate and
    what to change), instead of failing deep inside torch or swapping the machine to a halt.

    The output buffer (float32 on CPU, plus the resized copy when outscale differs) and one network call's
    working memory (tile_bytes, on the network's device) are counted; the estimate is coarse, so it is only
    compared with what is free, never with a safety margin."""
    out_bytes = b * h * scale * w * scale * c * 4
    if out_hw != (h * scale, w * scale):
        out_bytes += b * out_hw[0] * out_hw[1] * c * 4
    work = tile_bytes(net, wh, ww, scale, 1)
    cuda = getattr(device, "type", str(device)) == "cuda"
    need_cpu = out_bytes + (0 if cuda else work)
    free_cpu = available_bytes(_CPU)
    tile_hint = (f"lower tile_size (now {tile or 'whole image'}, windows of {ww}x{wh} px)")
    if cuda:
        free_dev = available_bytes(device)
        if free_dev is not None and work > free_dev:
            raise UpscaleInputError(f"upscaling needs about {_gib(work)} of GPU memory for one {ww}x{wh} tile but "
                                    f"only {_gib(free_dev)} is free; {tile_hint}")
    if free_cpu is not None and need_cpu > free_cpu:
        raise UpscaleInputError(
            f"upscaling {b} image(s) of {w}x{h} by x{scale} needs about {_gib(need_cpu)} of memory (the result "
            f"{_gib(out_bytes)}" + ("" if cuda else f", one tile {_gib(work)}") + f") but only {_gib(free_cpu)} is "
            f"free; upscale fewer or smaller images, or use a smaller outscale" + ("" if cuda else f", or {tile_hint}"))


_CPU = "cpu"


def _resize_lanczos(images, out_h: int, out_w: int):
    """Real-ESRGAN's --outscale: OpenCV Lanczos-4 resize of the network's output, per image, clamped."""
    import cv2
    import numpy as np
    import torch

    b, _h, _w, c = images.shape
    res = torch.empty((b, out_h, out_w, c), dtype=torch.float32)
    for i in range(b):
        src = images[i].numpy()
        r = cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        if r.ndim == 2:
            r = r[..., None]
        res[i] = torch.from_numpy(np.clip(r, 0.0, 1.0, out=r))
    return res


def upscale_image(spec: ModelSpec, image, **options):
    """Upscale an IMAGE with the cached model of `spec` (pinned for the run; see upscale_tensor)."""
    with get_cache().use_entry(spec) as entry:
        return upscale_tensor(entry.value, image, scale=entry.meta.get("scale"), **options)
