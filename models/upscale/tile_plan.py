"""The plan of one tiled upscale run: which windows of the (virtually padded) image go through the network,
and where the kept core of each window's output lands. Pure geometry and indexing; tiles.py runs a plan.

Tiling, seamless: the (virtually padded) image is cut into windows that all have the same size, so
the windows of every image of the batch (and of its alpha channel) go through the network together,
`tile_batch` at a time. Each window reads at least `tile_pad` pixels of context around its core; only
the core of its output is kept and placed. Windows touching an image border are not padded beyond it
(that would change the result): they are shifted inward, and the windows of an axis are spread evenly
so that every one has the same length, no longer than tile + 2 * tile_pad, and the number of windows is
the least that allows that. Per axis the network then reads length + 2 * (n - 1) * tile_pad pixels,
exactly what Real-ESRGAN's tile_process reads, without its small edge tiles.

Padding is never materialised: windows are gathered from the caller's image through index maps that
reproduce Real-ESRGAN's reflect pre-pad and the pad to the network's size rules (a multiple of 2 / 4 for
RRDBNet x2 / x1, which pixel-unshuffle their input; of the attention window for SwinIR, HAT …): reflect at
the bottom / right as RealESRGANer and spandrel do, the edge pixel repeated past one image length as spandrel
does. Windows start on multiples of that size too, so a window tiles the network's grid as the whole image
would. So, beyond the output buffer itself, memory is bounded by the tile size; before any work, a run that
cannot fit in free memory is refused with an estimate.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB -> gray weights (Real-ESRGAN reduces the network's alpha so)


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


@dataclass(frozen=True)
class TilePlan:
    """The windows of one run over a (b, h, w, c) IMAGE and where their outputs go.

    `y` / `x` cut the padded axes (the image, Real-ESRGAN's pre-pad, the pad to the network's size rules);
    a job is (image index, is_alpha, y window, x window): an alpha job runs the alpha through the network.
    """

    batch: int
    height: int
    width: int
    channels: int
    scale: int
    pre_pad: int
    alpha_mode: str
    tile: int  # the core tile size in use (0 = the whole image in one window)
    y: AxisPlan
    x: AxisPlan

    @classmethod
    def build(cls, shape, *, scale: int, tile: int, tile_pad: int, pre_pad: int, alpha_mode: str,
              multiple: int = 1, minimum: int = 0, square: bool = False, whole_image: bool = False) -> "TilePlan":
        """The plan for an image of `shape` and a network with these size rules (spandrel's size_requirements:
        sides a multiple of `multiple`, at least `minimum`, maybe square); a network that tiles internally
        (whole_image) or must be square gets the whole image in one window."""
        b, h, w, c = shape
        if square or whole_image:
            tile = 0
        elif tile:
            tile = max(tile, minimum)
        ph, pw = max(h + pre_pad, minimum), max(w + pre_pad, minimum)
        ph, pw = ph + (-ph) % multiple, pw + (-pw) % multiple
        if square:
            ph = pw = max(ph, pw)
        return cls(b, h, w, c, scale, pre_pad, alpha_mode, tile,
                   plan_axis(ph, tile, tile_pad, multiple), plan_axis(pw, tile, tile_pad, multiple))

    @property
    def window_h(self) -> int:
        return self.y.window

    @property
    def window_w(self) -> int:
        return self.x.window

    @property
    def alpha_net(self) -> bool:
        """Whether an RGBA image's alpha goes through the network (else it is resized)."""
        return self.channels == 4 and self.alpha_mode == "network"

    def jobs(self) -> list[tuple]:
        grid = [(iy, ix) for iy in range(self.y.count) for ix in range(self.x.count)]
        return [(bi, a, iy, ix) for bi in range(self.batch) for a in ((False, True) if self.alpha_net else (False,))
                for iy, ix in grid]

    def _take(self, x, axis, start, length, repeat_edge=False):
        """Pixels start..start+length-1 of an axis of the padded image: a view inside the image, else
        gathered through the padding's index map (only windows that reach into the padding need it)."""
        import torch

        size = x.shape[axis]
        if start + length <= size:
            return x.narrow(axis, start, length)
        if repeat_edge:  # a resized alpha sees its border repeated, as resizing the whole alpha does
            index = torch.arange(start, start + length, device=x.device).clamp_(max=size - 1)
        else:
            index = _padded_index(start, length, size, self.pre_pad, x.device)
        return x.index_select(axis, index)

    def window(self, image, job):
        """The network's input for one job: (3, window_h, window_w), read from the caller's IMAGE."""
        bi, is_alpha, iy, ix = job
        wh, ww = self.window_h, self.window_w
        ys, xs = self.y.starts[iy], self.x.starts[ix]
        win = self._take(self._take(image[bi], 0, ys, wh), 1, xs, ww)
        if is_alpha:
            return win[..., 3].unsqueeze(0).expand(3, wh, ww)
        return win[..., :3].permute(2, 0, 1)

    def place(self, out, image, job, result) -> None:
        """Keep the core of one window's output (3, window_h * scale, window_w * scale) and write it into `out`."""
        bi, is_alpha, iy, ix = job
        s, h, w = self.scale, self.height, self.width
        (cy0, cy1), (cx0, cx1) = self.y.cores[iy], self.x.cores[ix]
        cy1, cx1 = min(cy1, h), min(cx1, w)  # drop what lies in the pre-pad / mod pad
        if cy0 >= cy1 or cx0 >= cx1:
            return
        ys, xs = self.y.starts[iy], self.x.starts[ix]
        core = result[:, (cy0 - ys) * s:(cy1 - ys) * s, (cx0 - xs) * s:(cx1 - xs) * s]
        dst = out[bi, cy0 * s:cy1 * s, cx0 * s:cx1 * s]
        if is_alpha:
            gray = core[0] * GRAY[0] + core[1] * GRAY[1] + core[2] * GRAY[2]
            dst[..., 3].copy_(gray)
        else:
            dst[..., :3].copy_(core.permute(1, 2, 0))
            if self.channels == 4 and not self.alpha_net:
                dst[..., 3].copy_(self._resized_alpha(image, bi, iy, ix, cy0, cy1, cx0, cx1))

    def _resized_alpha(self, image, bi, iy, ix, cy0, cy1, cx0, cx1):
        """Bicubic / bilinear alpha of one tile: the window's alpha resized, its core kept (with >= 2 px of
        context that equals resizing the whole alpha at once)."""
        import torch

        s = self.scale
        ys, xs = self.y.starts[iy], self.x.starts[ix]
        a = self._take(self._take(image[bi, ..., 3], 0, ys, self.window_h, True), 1, xs, self.window_w, True)
        a = torch.nn.functional.interpolate(a[None, None], scale_factor=s, mode=self.alpha_mode,
                                            align_corners=False)[0, 0].clamp_(0, 1)
        return a[(cy0 - ys) * s:(cy1 - ys) * s, (cx0 - xs) * s:(cx1 - xs) * s]
