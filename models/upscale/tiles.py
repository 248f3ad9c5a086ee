"""The tiled upscale engine: seamless equal-size tiles, batching, alpha, any outscale, progress, cancel.

It runs any network that maps a (N, 3, h, w) 0..1 batch to (N, 3, h * scale, w * scale): a loaded
`UpscaleModel` (spandrel, see upscale_arch.py; its size rules: multiple_of, minimum, square) or a plain torch
module (its scale then comes from `scale=` or its `scale` / `upscale` attribute).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..core import errors
from ..core.cache import ModelSpec, get_cache
from ..core.errors import VisionKitError

# ================================================================ the tiled upscale engine
#
# Tiling, seamless: the (virtually padded) image is cut into windows that all have the same size, so
# the windows of every image of the batch (and of its alpha channel) go through the network together,
# `tile_batch` at a time. Each window reads at least `tile_pad` pixels of context around its core; only
# the core of its output is kept and placed. Windows touching an image border are not padded beyond it
# (that would change the result): they are shifted inward, and the windows of an axis are spread evenly
# so that every one has the same length, no longer than tile + 2 * tile_pad, and the number of windows is
# the least that allows that. Per axis the network then reads length + 2 * (n - 1) * tile_pad pixels,
# exactly what Real-ESRGAN's tile_process reads, without its small edge tiles.
#
# Padding is never materialised: windows are gathered from the caller's image through index maps that
# reproduce Real-ESRGAN's reflect pre-pad and the pad to the network's size rules (a multiple of 2 / 4 for
# RRDBNet x2 / x1, which pixel-unshuffle their input; of the attention window for SwinIR, HAT …): reflect at
# the bottom / right as RealESRGANer and spandrel do, the edge pixel repeated past one image length as spandrel
# does. Windows start on multiples of that size too, so a window tiles the network's grid as the whole image
# would. So, beyond the output buffer itself, memory is bounded by the tile size; before any work, a run that
# cannot fit in free memory is refused with an estimate.

ALPHA_MODES = ("network", "bicubic", "bilinear")
DEFAULT_TILE = 512
DEFAULT_TILE_PAD = 16
MIN_TILE = 32
MAX_TILE_BATCH = 64
GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB -> gray weights (Real-ESRGAN reduces the network's alpha so)


class UpscaleInputError(VisionKitError):
    """Bad options or images for the upscale engine; the message says what was wrong and how to fix it."""


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is cut: `length` (padded, as the network sees it) into equal windows."""

    length: int
    window: int
    starts: tuple  # first pixel of each window
    cores: tuple  # (begin, end) of the part of each window's output that is kept

    @property
    def count(self) -> int:
        return len(self.starts)


def plan_axis(length: int, tile: int, pad: int, multiple: int = 1) -> AxisPlan:
    """Cut an axis of `length` pixels into the fewest equal windows of at most ~tile + 2 * pad pixels.

    tile = 0: one window, the whole axis. Every core keeps >= pad pixels of context on each side that is
    not an image border. With multiple > 1 (pixel-unshuffle networks) windows start and end on multiples
    of it, so every window unshuffles the same pixel groups as the whole image would.
    """
    m = max(int(multiple), 1)
    if length <= 0 or length % m:
        raise ValueError(f"axis length {length} is not a positive multiple of {m}")
    n_cells = length // m
    tile_c = n_cells if tile <= 0 else max(tile // m, 1)
    pad_c = -(-max(pad, 0) // m)
    count = max(1, -(-(n_cells - 2 * pad_c) // tile_c))
    if count == 1:
        return AxisPlan(length, length, (0,), ((0, length),))
    window = -(-(n_cells + 2 * (count - 1) * pad_c) // count)
    if window >= n_cells:
        return AxisPlan(length, length, (0,), ((0, length),))
    span = n_cells - window
    starts = [(i * span) // (count - 1) for i in range(count)]
    cuts = [0]
    for a, b in itertools.pairwise(starts):
        overlap = a + window - b  # >= 2 * pad_c by the choice of window
        cuts.append(b + overlap // 2)
    cuts.append(n_cells)
    return AxisPlan(length, window * m, tuple(s * m for s in starts),
                    tuple((cuts[i] * m, cuts[i + 1] * m) for i in range(count)))


def _mirror(idx, size: int):
    """Map positions (a LongTensor, >= 0) onto an axis of `size` pixels, mirrored past its end.

    The same as reflect padding (the edge pixel is not repeated), and it keeps mirroring when the pad is
    longer than the image (where torch's reflect pad refuses).
    """
    import torch

    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx % period
    return torch.where(idx >= size, period - idx, idx)


def _reflect_then_edge(idx, size: int):
    """Map positions (>= 0) onto `size` pixels padded at the end as spandrel pads to its size rules: reflect
    (the edge pixel not repeated) for up to size - 1 pixels, then the last padded pixel repeated."""
    import torch

    if size == 1:
        return torch.zeros_like(idx)
    mirrored = torch.where(idx >= size, 2 * (size - 1) - idx, idx)
    return mirrored.clamp_(min=0)


def _padded_index(start: int, length: int, size: int, pre_pad: int, device=None):
    """Source pixels of padded positions start..start+length-1: Real-ESRGAN's reflect pre-pad of the
    image, then the pad (of the pre-padded image) to the network's size rules."""
    import torch

    idx = torch.arange(start, start + length, device=device)
    idx = _reflect_then_edge(idx, size + pre_pad)
    if pre_pad:
        idx = _mirror(idx, size)
    return idx


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
    import torch

    from ..core import host
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
    alpha_net = c == 4 and alpha_mode == "network"

    # the network's size rules (spandrel's size_requirements): sides a multiple of `mult`, at least `minimum`,
    # maybe square; a model that tiles internally (or must be square) gets the whole image in one window
    mult = input_multiple(net)
    minimum = int(getattr(net, "minimum", 0) or 0)
    square = bool(getattr(net, "square", False))
    if square or getattr(net, "tiling", "supported") == "internal":
        tile = 0
    elif tile:
        tile = max(tile, minimum)
    ph, pw = max(h + pre_pad, minimum), max(w + pre_pad, minimum)
    ph, pw = ph + (-ph) % mult, pw + (-pw) % mult
    if square:
        ph = pw = max(ph, pw)
    plan_y, plan_x = plan_axis(ph, tile, tile_pad, mult), plan_axis(pw, tile, tile_pad, mult)

    device, dtype = _net_device_dtype(net)
    wh, ww = plan_y.window, plan_x.window
    batch_n = int(tile_batch) if tile_batch and tile_batch > 0 else auto_tile_batch(net, wh, ww, scale, device)
    batch_n = max(1, min(batch_n, MAX_TILE_BATCH))
    check_memory(net, device, b, h, w, c, scale, (out_h, out_w), wh, ww, batch_n, tile)

    # jobs: (image index, is_alpha, y window, x window); an alpha job runs the alpha through the network
    grid = [(iy, ix) for iy in range(plan_y.count) for ix in range(plan_x.count)]
    jobs = [(bi, a, iy, ix) for bi in range(b) for a in ((False, True) if alpha_net else (False,))
            for iy, ix in grid]
    total = len(jobs)

    nbytes = b * h * scale * w * scale * c * 4
    try:
        out = torch.empty((b, h * scale, w * scale, c), dtype=torch.float32)
    except RuntimeError as ex:
        raise UpscaleInputError(f"the upscaled image ({b}x{w * scale}x{h * scale}x{c}) needs {_gib(nbytes)} "
                                "of memory, more than is free; upscale fewer or smaller images") from ex

    def take(x, axis, start, length, repeat_edge=False):
        """Pixels start..start+length-1 of an axis of the padded image: a view inside the image, else
        gathered through the padding's index map (only windows that reach into the padding need it)."""
        size = x.shape[axis]
        if start + length <= size:
            return x.narrow(axis, start, length)
        if repeat_edge:  # a resized alpha sees its border repeated, as resizing the whole alpha does
            index = torch.arange(start, start + length, device=x.device).clamp_(max=size - 1)
        else:
            index = _padded_index(start, length, size, pre_pad, x.device)
        return x.index_select(axis, index)

    def window(job):
        bi, is_alpha, iy, ix = job
        ys, xs = plan_y.starts[iy], plan_x.starts[ix]
        win = take(take(image[bi], 0, ys, wh), 1, xs, ww)
        if is_alpha:
            return win[..., 3].unsqueeze(0).expand(3, wh, ww)
        return win[..., :3].permute(2, 0, 1)

    def place(job, result):
        """Keep the core of one window's output (3, wh*s, ww*s) and write it into `out`."""
        bi, is_alpha, iy, ix = job
        (cy0, cy1), (cx0, cx1) = plan_y.cores[iy], plan_x.cores[ix]
        cy1, cx1 = min(cy1, h), min(cx1, w)  # drop what lies in the pre-pad / mod pad
        if cy0 >= cy1 or cx0 >= cx1:
            return
        ys, xs = plan_y.starts[iy], plan_x.starts[ix]
        core = result[:, (cy0 - ys) * scale:(cy1 - ys) * scale, (cx0 - xs) * scale:(cx1 - xs) * scale]
        dst = out[bi, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale]
        if is_alpha:
            gray = core[0] * GRAY[0] + core[1] * GRAY[1] + core[2] * GRAY[2]
            dst[..., 3].copy_(gray)
        else:
            dst[..., :3].copy_(core.permute(1, 2, 0))
            if c == 4 and not alpha_net:
                dst[..., 3].copy_(resize_alpha(bi, iy, ix, cy0, cy1, cx0, cx1))

    def resize_alpha(bi, iy, ix, cy0, cy1, cx0, cx1):
        """Bicubic / bilinear alpha of one tile: the window's alpha resized, its core kept (with >= 2 px of
        context that equals resizing the whole alpha at once)."""
        ys, xs = plan_y.starts[iy], plan_x.starts[ix]
        a = take(take(image[bi, ..., 3], 0, ys, wh, True), 1, xs, ww, True)
        a = torch.nn.functional.interpolate(a[None, None], scale_factor=scale, mode=alpha_mode,
                                            align_corners=False)[0, 0].clamp_(0, 1)
        return a[(cy0 - ys) * scale:(cy1 - ys) * scale, (cx0 - xs) * scale:(cx1 - xs) * scale]

    bar = host.Progress(total, progress)
    i = 0
    with torch.inference_mode():
        while i < total:
            host.throw_if_cancelled()
            chunk = jobs[i:i + batch_n]
            x = torch.stack([window(j) for j in chunk]).to(device=device, dtype=dtype)
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
                place(job, y[k])
            del y
            for _ in chunk:
                bar.update(1)  # also raises ComfyUI's interrupt when the user cancelled
            i += len(chunk)

    if (out_h, out_w) != (h * scale, w * scale):
        out = _resize_lanczos(out, out_h, out_w)
    return out


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
