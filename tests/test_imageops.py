"""IMAGE/MASK checks and their numpy / OpenCV BGR conversions: exact, batches and alpha kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.core import imageops as io  # noqa: E402


def rand_u8(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_uint8_round_trip_is_exact_for_rgb_and_rgba_batches():
    for c in (3, 4):
        a = rand_u8(2, 5, 7, c)
        img = io.from_uint8(a)
        assert img.shape == (2, 5, 7, c) and img.dtype == torch.float32
        assert np.array_equal(io.to_uint8(img), a)


def test_bgr_round_trip_and_channel_order():
    a = rand_u8(3, 4, 6, 3)
    img = io.from_uint8(a)
    bgr = io.image_to_bgr_list(img)
    assert len(bgr) == 3 and bgr[0].shape == (4, 6, 3) and bgr[0].flags["C_CONTIGUOUS"]
    assert np.array_equal(bgr[1][..., 0], a[1][..., 2])  # B of BGR is B of RGB
    assert all(np.array_equal(bgr[i][..., ::-1], a[i]) for i in range(3))  # exact, every image


def test_bgr_drops_alpha_which_split_alpha_keeps():
    a = rand_u8(1, 3, 3, 4)
    img = io.from_uint8(a)
    rgb, alpha = io.split_alpha(img)
    assert rgb.shape[-1] == 3 and alpha.shape == (1, 3, 3)
    assert io.image_to_bgr_list(img)[0].shape == (3, 3, 3)
    assert torch.equal(torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1), img)
    assert io.split_alpha(rgb)[1] is None


def test_check_image_accepts_grayscale_and_unbatched_and_refuses_bad():
    g = torch.rand(1, 4, 4, 1)
    assert io.check_image(g).shape == (1, 4, 4, 3)
    assert io.check_image(torch.rand(4, 4, 3)).shape == (1, 4, 4, 3)
    with pytest.raises(io.ImageInputError, match="empty"):
        io.check_image(torch.zeros(0, 4, 4, 3))
    with pytest.raises(io.ImageInputError, match="empty"):
        io.check_image(torch.zeros(1, 0, 4, 3))
    with pytest.raises(io.ImageInputError, match="2 channels"):
        io.check_image(torch.zeros(1, 4, 4, 2))
    bad = torch.rand(1, 4, 4, 3)
    bad[0, 1, 1, 1] = float("nan")
    bad[0, 2, 2, 2] = float("inf")
    with pytest.raises(io.ImageInputError, match="2 NaN or infinite"):
        io.check_image(bad)
    with pytest.raises(io.ImageInputError, match="not an IMAGE"):
        io.check_image(np.zeros((1, 4, 4, 3)))


def test_match_mask_broadcast_resize_and_batch_mismatch():
    img = torch.rand(3, 8, 10, 3)
    one = torch.zeros(1, 8, 10)
    one[0, 2:4, 3:5] = 1
    out = io.match_mask(one, img)
    assert out.shape == (3, 8, 10) and torch.equal(out[2], one[0])
    small = torch.ones(3, 4, 5)
    assert io.match_mask(small, img).shape == (3, 8, 10)
    half = torch.zeros(1, 4, 4)
    half[:, :, 2:] = 1
    resized = io.match_mask(half, torch.rand(1, 8, 8, 3))
    assert resized[0, :, :3].max() < 0.5 and resized[0, :, 5:].min() > 0.5  # bilinear, same geometry
    with pytest.raises(io.ImageInputError, match="batch of 2 but image has 3"):
        io.match_mask(torch.zeros(2, 8, 10), img)
