"""Tiny upscale models in their published file formats, built with spandrel's own architecture classes.

One file per architecture family the tests cover: Real-ESRGAN RRDBNet x4 / x2 (basicsr key names, under
params_ema / params), ESRGAN in the old 'model.N' layout (4x-UltraSharp and most community models), Real-ESRGAN
compact (SRVGGNetCompact), SwinIR and HAT (attention windows: sizes must be multiples of the window), some
under names that say nothing about what they are.

RRDBNet-like networks with small random weights give outputs squeezed into a sliver of 0..1 (the first tiny
fixtures gave 0 .. 0.067, a third of it clamped to 0), where a one-level tolerance is 6-8 % of the range and
real differences (a padding mode, an edge pixel) hide. So the last convolution of each fixture is calibrated:
scaled and shifted so that a test image's output has mean 0.5 and standard deviation 0.25 per channel, which
spans the range as a real model's output does (the compact models add their upscaled input and span it already).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .tiny_models import _perturb, _save_pth, _save_safetensors, _seeded, builder

# file (relative to upscale_models) -> (spandrel architecture id, scale); what the loader must find
UPSCALE_FIXTURES = {
    "tiny_RealESRGAN_x4plus.pth": ("ESRGAN", 4),
    "tiny_RealESRGAN_x2plus.pth": ("ESRGAN", 2),
    "tiny_realesr-general-x4v3.safetensors": ("Compact", 4),
    "nested/tiny_srvgg_x2.pth": ("Compact", 2),
    "tiny_4x-UltraSharp-oldlayout.pth": ("ESRGAN", 4),
    "tiny_SwinIR_x2.pth": ("SwinIR", 2),
    "renamed_upscaler.safetensors": ("HAT", 4),  # a HAT model under a name that says nothing
}
# the ones in Real-ESRGAN's own layout: RealESRGANer is their reference; spandrel's call is the others'
REAL_ESRGAN = ("tiny_RealESRGAN_x4plus.pth", "tiny_RealESRGAN_x2plus.pth", "tiny_realesr-general-x4v3.safetensors",
               "nested/tiny_srvgg_x2.pth")


def calibration_image(h: int = 24, w: int = 24, seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


@torch.no_grad()
def calibrate(net, last: torch.nn.Conv2d, mean: float = 0.5, std: float = 0.25, image=None) -> None:
    """Scale and shift `last` (the network's final convolution, its output linear in it) so that the output
    for a test image has the given mean and standard deviation per channel."""
    x = calibration_image() if image is None else image
    out = net(x)
    k = std / out.std(dim=(0, 2, 3)).clamp_min(1e-6)
    if out.shape[1] != last.out_channels:  # a pixel-shuffle after it: one factor per output channel group
        k = k.repeat_interleave(last.out_channels // out.shape[1])
    last.weight.mul_(k.view(-1, 1, 1, 1))
    last.bias.mul_(k)
    for _ in range(2):  # the offset: how much one unit of bias moves the output, then move it to `mean`
        base = net(x).mean(dim=(0, 2, 3))
        last.bias.add_(1.0)
        step = net(x).mean(dim=(0, 2, 3)) - base
        last.bias.sub_(1.0)
        shift = (mean - base) / step.clamp_min(1e-6)
        if out.shape[1] != last.out_channels:
            shift = shift.repeat_interleave(last.out_channels // out.shape[1])
        last.bias.add_(shift)


def _last_conv(net) -> torch.nn.Conv2d:
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]


# ---------------------------------------------------------------- ESRGAN / Real-ESRGAN (RRDBNet)
def tiny_esrgan(scale: int = 4, num_blocks: int = 2, nf: int = 8, seed: int = 0):
    """spandrel's RRDBNet; scale 2 / 1 are Real-ESRGAN's pixel-unshuffle variants (x4 body, 4 / 16x input)."""
    from spandrel.architectures.ESRGAN import ESRGAN

    _seeded(seed)
    shuffle = {4: None, 2: 2, 1: 4}[scale]
    in_nc = 3 * (shuffle or 1) ** 2
    net = ESRGAN(in_nc=in_nc, out_nc=3, num_filters=nf, num_blocks=num_blocks, scale=4, shuffle_factor=shuffle)
    _perturb(net)
    calibrate(net.eval(), _last_conv(net))
    return net


def real_esrgan_keys(old: dict) -> dict:
    """spandrel's (the original ESRGAN's) 'model.N' keys -> basicsr / Real-ESRGAN key names."""
    nb = 1 + max(int(m.group(1)) for k in old if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k)))
    fixed = {"model.0": "conv_first", f"model.1.sub.{nb}": "conv_body", "model.3": "conv_up1", "model.6": "conv_up2",
             "model.8": "conv_hr", "model.10": "conv_last"}
    new = {}
    for k, v in old.items():
        m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", k)
        if m:
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            continue
        prefix, kind = k.rsplit(".", 1)
        new[f"{fixed[prefix]}.{kind}"] = v
    return new


# ---------------------------------------------------------------- Real-ESRGAN compact (SRVGGNetCompact)
def tiny_compact(scale: int = 4, num_conv: int = 3, num_feat: int = 8, seed: int = 1, act_type: str = "prelu"):
    from spandrel.architectures.Compact import Compact

    _seeded(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale, act_type=act_type)
    _perturb(net)
    return net.eval()


# ---------------------------------------------------------------- SwinIR and HAT (window attention)
def tiny_swinir(scale: int = 2, seed: int = 5):
    from spandrel.architectures.SwinIR import SwinIR

    _seeded(seed)
    net = SwinIR(img_size=16, patch_size=1, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4,
                 mlp_ratio=2.0, upscale=scale, img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv")
    _perturb(net)
    calibrate(net.eval(), _last_conv(net))
    return net


def tiny_hat(scale: int = 4, seed: int = 6):
    from spandrel.architectures.HAT import HAT

    _seeded(seed)
    net = HAT(img_size=16, patch_size=1, in_chans=3, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4,
              compress_ratio=3, squeeze_factor=2, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0, upscale=scale,
              img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv", num_feat=16)
    _perturb(net)
    calibrate(net.eval(), _last_conv(net))
    return net


@builder
def upscale_models(root: Path) -> None:
    d = root / "upscale_models"
    _save_pth(real_esrgan_keys(tiny_esrgan(4).state_dict()), d / "tiny_RealESRGAN_x4plus.pth", wrap="params_ema")
    _save_pth(real_esrgan_keys(tiny_esrgan(2, seed=2).state_dict()), d / "tiny_RealESRGAN_x2plus.pth", wrap="params")
    _save_safetensors(tiny_compact(4).state_dict(), d / "tiny_realesr-general-x4v3.safetensors")
    _save_pth(tiny_compact(2, seed=3).state_dict(), d / "nested" / "tiny_srvgg_x2.pth")
    _save_pth(tiny_esrgan(4, seed=4).state_dict(), d / "tiny_4x-UltraSharp-oldlayout.pth")  # plain, old keys
    _save_pth(tiny_swinir(2).state_dict(), d / "tiny_SwinIR_x2.pth", wrap="params")
    _save_safetensors(tiny_hat(4).state_dict(), d / "renamed_upscaler.safetensors")


# ---------------------------------------------------------------- helpers of the upscale tests
def fixture_path(models_dir, name) -> str:
    return str(models_dir / "upscale_models" / name)


def smooth_image(h, w, c=3, b=1, seed=0):
    """A smooth-ish random IMAGE that survives uint8 round trips (values on the 1/255 grid)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return (x.permute(0, 2, 3, 1) * 255).round().div(255).contiguous()


def spandrel_call(sd, image):
    """spandrel's own full-image call on the same weights (its loader, its padding), image by image."""
    import spandrel

    desc = spandrel.ModelLoader().load_from_state_dict(dict(sd)).eval()
    with torch.no_grad():
        return torch.cat([desc(image[i:i + 1].permute(0, 3, 1, 2)).permute(0, 2, 3, 1) for i in range(len(image))])
