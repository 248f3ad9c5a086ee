#!/usr/bin/env python3
"""Writes the example input images of the shipped workflows into workflows/inputs/ (drawn here, no photos).

    python scripts/dev/make_example_inputs.py           # (re)write them
    python scripts/dev/make_example_inputs.py --check   # exit 1 when a file differs from what this draws

The images are simple drawings made with Pillow, so they carry no licence of their own (the repository's
MIT licence). They are deterministic: the same Pillow draws the same pixels, and the tests use them as they
are on disk. They only need to show what each workflow is for (two lions side by side, a person in a shirt,
a pose skeleton, a face, a texture); real photos give real results.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[2] / "workflows" / "inputs"


def _sky_and_ground(w: int, h: int, horizon: float = 0.55) -> Image.Image:
    im = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(im)
    hy = int(h * horizon)
    for y in range(h):
        if y < hy:
            t = y / hy
            c = (int(120 + 80 * t), int(170 + 50 * t), int(230 - 10 * t))
        else:
            t = (y - hy) / (h - hy)
            c = (int(200 - 40 * t), int(170 - 40 * t), int(90 - 30 * t))
        d.line([(0, y), (w, y)], fill=c)
    return im


def _lion(d: ImageDraw.ImageDraw, cx: int, cy: int, s: float, facing: int) -> None:
    """A cartoon lion (mane, head, body, legs, tail) centred on (cx, cy), size s, facing +1 right / -1 left."""
    body = (cx - 45 * s, cy - 18 * s, cx + 45 * s, cy + 22 * s)
    d.ellipse(body, fill=(196, 140, 60))
    for lx in (-32, -14, 14, 32):
        d.rectangle((cx + lx * s - 5 * s, cy + 10 * s, cx + lx * s + 5 * s, cy + 48 * s), fill=(180, 125, 50))
    hx = cx + facing * 48 * s
    d.ellipse((hx - 30 * s, cy - 55 * s, hx + 30 * s, cy + 5 * s), fill=(130, 70, 25))  # mane
    d.ellipse((hx - 18 * s, cy - 43 * s, hx + 18 * s, cy - 7 * s), fill=(215, 160, 75))  # face
    for ex in (-7, 7):
        d.ellipse((hx + ex * s - 2.5 * s, cy - 32 * s, hx + ex * s + 2.5 * s, cy - 27 * s), fill=(30, 20, 10))
    d.polygon([(hx - 4 * s, cy - 20 * s), (hx + 4 * s, cy - 20 * s), (hx, cy - 15 * s)], fill=(60, 30, 20))
    tx = cx - facing * 45 * s
    d.line([(tx, cy - 5 * s), (tx - facing * 25 * s, cy - 30 * s)], fill=(170, 115, 45), width=max(2, int(5 * s)))
    d.ellipse((tx - facing * 25 * s - 6 * s, cy - 36 * s, tx - facing * 25 * s + 6 * s, cy - 24 * s),
              fill=(110, 60, 20))


def lions() -> Image.Image:
    """Two lions on a savanna: the left one is the one 'turn the left lion into a dog' edits."""
    w, h = 384, 256
    im = _sky_and_ground(w, h)
    d = ImageDraw.Draw(im)
    d.ellipse((300, 20, 340, 60), fill=(255, 236, 150))  # sun
    _lion(d, 100, 165, 1.0, facing=1)
    _lion(d, 285, 160, 0.9, facing=-1)
    return im


def person() -> Image.Image:
    """A person in a red shirt and blue trousers in front of a wall (clothes_swap)."""
    w, h = 256, 384
    im = Image.new("RGB", (w, h), (225, 222, 214))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 300, w, h), fill=(150, 130, 110))  # floor
    skin, shirt, trousers = (224, 180, 150), (200, 40, 45), (40, 60, 120)
    cx = w // 2
    d.ellipse((cx - 30, 30, cx + 30, 100), fill=skin)  # head
    d.ellipse((cx - 32, 24, cx + 32, 64), fill=(60, 40, 25))  # hair
    d.ellipse((cx - 26, 44, cx + 26, 100), fill=skin)
    d.rectangle((cx - 10, 98, cx + 10, 112), fill=skin)  # neck
    d.polygon([(cx - 55, 112), (cx + 55, 112), (cx + 48, 230), (cx - 48, 230)], fill=shirt)  # shirt
    d.polygon([(cx - 55, 112), (cx - 85, 200), (cx - 66, 206), (cx - 44, 140)], fill=shirt)  # sleeves
    d.polygon([(cx + 55, 112), (cx + 85, 200), (cx + 66, 206), (cx + 44, 140)], fill=shirt)
    d.ellipse((cx - 86, 198, cx - 64, 220), fill=skin)  # hands
    d.ellipse((cx + 64, 198, cx + 86, 220), fill=skin)
    d.rectangle((cx - 46, 230, cx - 4, 350), fill=trousers)
    d.rectangle((cx + 4, 230, cx + 46, 350), fill=trousers)
    d.rectangle((cx - 50, 350, cx - 2, 362), fill=(30, 30, 30))  # shoes
    d.rectangle((cx + 2, 350, cx + 50, 362), fill=(30, 30, 30))
    return im


# OpenPose (COCO-18) keypoints of a person with the right arm raised, in a 384×512 frame, and its limb colours
POSE = {0: (192, 90), 1: (192, 150), 2: (150, 152), 3: (118, 100), 4: (110, 45), 5: (234, 152), 6: (262, 215),
        7: (272, 275), 8: (163, 290), 9: (150, 380), 10: (142, 468), 11: (221, 290), 12: (240, 378),
        13: (255, 466), 14: (182, 80), 15: (202, 80), 16: (170, 86), 17: (214, 86)}
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]


def pose() -> Image.Image:
    """An OpenPose-style skeleton (coloured limbs and joints on black), the hint of controlnet_pose."""
    w, h = 384, 512
    im = Image.new("RGB", (w, h), (0, 0, 0))
    d = ImageDraw.Draw(im)
    for i, (a, b) in enumerate(LIMBS):
        hue = i / len(LIMBS)
        c = tuple(int(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
        d.line([POSE[a], POSE[b]], fill=c, width=8)
    for i, (x, y) in POSE.items():
        hue = i / len(POSE)
        c = tuple(int(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
        d.ellipse((x - 5, y - 5, x + 5, y + 5), fill=c)
    return im


def house() -> Image.Image:
    """A house with a tree: clear outlines for controlnet_canny."""
    w, h = 384, 256
    im = _sky_and_ground(w, h, 0.7)
    d = ImageDraw.Draw(im)
    d.rectangle((90, 110, 250, 200), fill=(235, 225, 200), outline=(80, 60, 50), width=3)
    d.polygon([(75, 112), (170, 45), (265, 112)], fill=(170, 60, 50), outline=(80, 40, 30))
    d.rectangle((150, 145, 185, 200), fill=(110, 70, 40))
    for x in (105, 205):
        d.rectangle((x, 130, x + 30, 160), fill=(150, 200, 235), outline=(60, 60, 60), width=2)
    d.rectangle((300, 130, 314, 200), fill=(100, 70, 40))
    d.ellipse((270, 70, 345, 150), fill=(60, 130, 60))
    return im


def face() -> Image.Image:
    """A front-facing drawn face (instantid_portrait's face photo; a real photo is what InstantID needs)."""
    w, h = 320, 384
    im = Image.new("RGB", (w, h), (200, 210, 225))
    d = ImageDraw.Draw(im)
    cx = w // 2
    d.ellipse((cx - 95, 55, cx + 95, 300), fill=(70, 45, 30))  # hair
    d.rectangle((cx - 30, 250, cx + 30, 320), fill=(225, 185, 155))  # neck
    d.polygon([(cx - 120, 384), (cx - 100, 320), (cx + 100, 320), (cx + 120, 384)], fill=(40, 90, 140))
    d.ellipse((cx - 75, 80, cx + 75, 285), fill=(230, 190, 160))  # face
    for ex in (-32, 32):
        d.ellipse((cx + ex - 14, 160, cx + ex + 14, 176), fill=(250, 250, 250))
        d.ellipse((cx + ex - 6, 162, cx + ex + 6, 174), fill=(60, 40, 30))
        d.line([(cx + ex - 16, 148), (cx + ex + 16, 146)], fill=(70, 45, 30), width=4)
    d.polygon([(cx, 175), (cx - 10, 215), (cx + 10, 215)], fill=(210, 160, 130))
    d.arc((cx - 30, 215, cx + 30, 250), 20, 160, fill=(170, 60, 60), width=4)
    return im


def style() -> Image.Image:
    """A swirly, painterly texture in warm colours (the style reference of ipadapter_style_transfer)."""
    w, h = 256, 256
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            u, v = x / w * 2 * math.pi, y / h * 2 * math.pi
            a = math.sin(3 * u + 2 * math.sin(2 * v)) + math.cos(4 * v + 1.5 * math.sin(3 * u))
            t = 0.5 + 0.25 * a
            px[x, y] = (int(40 + 200 * t), int(30 + 120 * t * t), int(90 + 100 * (1 - t)))
    d = ImageDraw.Draw(im)
    for i in range(12):
        r = 10 + 9 * i
        d.arc((128 - r, 128 - r, 128 + r, 128 + r), 30 * i, 30 * i + 200, fill=(250, 220, 120), width=3)
    return im


def garment() -> Image.Image:
    """A striped green shirt on white (the garment reference of clothes_swap)."""
    w, h = 256, 256
    im = Image.new("RGB", (w, h), (245, 245, 245))
    d = ImageDraw.Draw(im)
    shape = [(70, 40), (186, 40), (240, 100), (210, 125), (190, 105), (190, 230), (66, 230), (66, 105),
             (46, 125), (16, 100)]
    d.polygon(shape, fill=(40, 140, 80))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon(shape, fill=255)
    stripes = Image.new("RGB", (w, h), (40, 140, 80))
    sd = ImageDraw.Draw(stripes)
    for y in range(40, 240, 22):
        sd.rectangle((0, y, w, y + 9), fill=(235, 230, 200))
    im.paste(stripes, (0, 0), mask)
    d.polygon([(110, 40), (146, 40), (128, 62)], fill=(245, 245, 245))  # neckline
    return im


# ---- issue 20: a second savanna picture for "most similar image" (one lion, another place and light)
def lion_alone() -> Image.Image:
    """One lion on a savanna, drawn elsewhere and larger: the picture most like visionkit_lions.png in the
    most_similar_image workflow (the house is the unlike one)."""
    w, h = 384, 256
    im = _sky_and_ground(w, h, horizon=0.5)
    d = ImageDraw.Draw(im)
    d.ellipse((40, 25, 76, 61), fill=(255, 224, 130))  # sun
    _lion(d, 200, 160, 1.25, facing=-1)
    return im


def candidates() -> list[Image.Image]:
    """The most_similar_image candidates as one 2-frame (animated) PNG: ComfyUI's Load Image gives every frame
    of a multi-frame file as one IMAGE batch, so no batching node is needed (core's Batch Images is deprecated
    in ComfyUI 0.33, whose frontend swaps it for another node on load)."""
    return [house(), lion_alone()]


IMAGES = {
    "visionkit_lions.png": lions,
    "visionkit_person.png": person,
    "visionkit_pose.png": pose,
    "visionkit_house.png": house,
    "visionkit_face.png": face,
    "visionkit_style.png": style,
    "visionkit_garment.png": garment,
    "visionkit_lion_alone.png": lion_alone,  # issue 20
    "visionkit_candidates.png": candidates,  # issue 20: house + lion_alone as two frames
}


def png_bytes(im) -> bytes:
    """PNG bytes of one picture, or an animated PNG of a list of pictures (one frame each)."""
    buf = io.BytesIO()
    if isinstance(im, list):
        im[0].save(buf, format="PNG", save_all=True, append_images=im[1:], duration=1000, loop=0)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def frames_bytes(im) -> bytes:
    """The RGB pixels of every frame, for --check."""
    from PIL import ImageSequence

    if isinstance(im, list):
        return b"".join(f.convert("RGB").tobytes() for f in im)
    return b"".join(f.convert("RGB").tobytes() for f in ImageSequence.Iterator(im))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare the files with what would be drawn")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, fn in IMAGES.items():
        im = fn()
        path = OUT / name
        if args.check:
            if not path.is_file() or frames_bytes(Image.open(path)) != frames_bytes(im):
                stale.append(name)
            continue
        path.write_bytes(png_bytes(im))
        first = im[0] if isinstance(im, list) else im
        print(f"wrote {path.relative_to(OUT.parents[1])} ({first.width}×{first.height}, {path.stat().st_size} bytes)")
    if stale:
        print("out of date (run scripts/dev/make_example_inputs.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
