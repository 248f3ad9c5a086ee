"""VK_BOXES: per-image detection boxes, and what nodes do with them (select, clamp, mask, draw, JSON).

The format (public: workflows and other nodes read it): a list with one entry per image of the batch; each entry is a list of
`{"box": [x0, y0, x1, y1], "score": s, "label": "phrase"}` in pixels of that image (floats; x1/y1 are
exclusive, so a box covering columns 3..9 is [3, y0, 10, y1]), JSON-serialisable (plain Python
floats and strings only). An image without detections has an empty list; that is a normal outcome.

Helpers here work on that format and know nothing about any detector:

- `make_box`, `clamp_box`, `normalize` (check / clean a VK_BOXES value from a node or a JSON string);
- `select(boxes, position, best_only, max_detections)`: the order of operations is fixed and
  documented in `select`;
- `boxes_to_mask(boxes, height, width)`: union of the boxes as a MASK (B, H, W);
- `draw_preview(image, boxes)`: an IMAGE with boxes and labels drawn, and a "no detection" note on
  images without boxes;
- `to_json` / `from_json`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable

from ..core.errors import VisionKitError

BOXES_TYPE = "VK_BOXES"  # the ComfyUI socket type of per-image detection boxes (the format above)

POSITIONS = ("all", "left-most", "right-most", "largest", "smallest", "top-most", "bottom-most")
NO_DETECTION_NOTE = "no detection"


class BoxesError(VisionKitError):
    """A VK_BOXES value or a selection option that cannot be used; the message says what was wrong."""


# ------------------------------------------------------------------ single boxes
def make_box(box, score: float, label: str) -> dict:
    """One VK_BOXES entry with plain Python types."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"box": [x0, y0, x1, y1], "score": float(score), "label": str(label)}


def clamp_box(box, width: int, height: int) -> list[float]:
    """[x0, y0, x1, y1] clamped to the image (0..width, 0..height), with x0 <= x1 and y0 <= y1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))))
    y0, y1 = sorted((min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))))
    return [x0, y0, x1, y1]


def center(entry: dict) -> tuple[float, float]:
    x0, y0, x1, y1 = entry["box"]
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def area(entry: dict) -> float:
    x0, y0, x1, y1 = entry["box"]
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def pixel_span(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels a box touches: columns c0..c1-1 and rows r0..r1-1, inside the image.

    floor of the start, ceil of the end, so integer boxes map to exactly their pixels (x1/y1 exclusive)
    and a fractional box covers every pixel it overlaps.
    """
    x0, y0, x1, y1 = clamp_box(box, width, height)
    c0, r0 = int(math.floor(x0)), int(math.floor(y0))
    c1, r1 = int(math.ceil(x1)), int(math.ceil(y1))
    return c0, r0, max(c1, c0), max(r1, r0)


# ------------------------------------------------------------------ the whole value
def normalize(value, name: str = "boxes") -> list[list[dict]]:
    """Check a VK_BOXES value (or its JSON string) and return it with plain Python types.

    Also accepted, for API users: a single image's list of boxes (becomes a batch of one) and bare
    [x0, y0, x1, y1] lists (score 1.0, label "").
    """
    if isinstance(value, str):
        value = from_json(value, name)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise BoxesError(f"{name} is a {type(value).__name__}; VK_BOXES is a list (one entry per image) of lists "
                         "of {'box': [x0, y0, x1, y1], 'score': s, 'label': 'phrase'}")
    if value and all(_is_entry(v) for v in value):  # one image's boxes
        value = [value]
    out: list[list[dict]] = []
    for i, per_image in enumerate(value):
        if not isinstance(per_image, (list, tuple)):
            raise BoxesError(f"{name}[{i}] is a {type(per_image).__name__}; each image's boxes are a list")
        items = []
        for j, e in enumerate(per_image):
            items.append(_entry(e, f"{name}[{i}][{j}]"))
        out.append(items)
    return out


def _is_entry(v) -> bool:
    return isinstance(v, dict) or (isinstance(v, (list, tuple)) and len(v) == 4
                                   and all(isinstance(x, (int, float)) for x in v))


def _entry(e, where: str) -> dict:
    if isinstance(e, (list, tuple)) and len(e) == 4:
        e = {"box": list(e)}
    if not isinstance(e, dict) or "box" not in e:
        raise BoxesError(f"{where} is not a box: expected {{'box': [x0, y0, x1, y1], 'score': s, 'label': 'phrase'}}")
    box = e["box"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BoxesError(f"{where}: 'box' must be [x0, y0, x1, y1], got {box!r}")
    try:
        vals = [float(v) for v in box]
        score = float(e.get("score", 1.0))
    except (TypeError, ValueError) as ex:
        raise BoxesError(f"{where}: box coordinates and score must be numbers, got {e!r}") from ex
    if not all(math.isfinite(v) for v in vals + [score]):
        raise BoxesError(f"{where}: box coordinates and score must be finite numbers, got {e!r}")
    return make_box(vals, score, e.get("label", ""))


def to_json(boxes) -> str:
    return json.dumps(normalize(boxes))


def from_json(text: str, name: str = "boxes") -> list:
    text = (text or "").strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError as ex:
        raise BoxesError(f"{name} is not valid JSON ({ex.msg} at position {ex.pos})") from ex


def clamp_all(boxes, sizes: Iterable[tuple[int, int]]) -> list[list[dict]]:
    """Every box clamped to its image; `sizes` gives (height, width) per image."""
    out = []
    for per_image, (h, w) in zip(normalize(boxes), sizes):
        out.append([make_box(clamp_box(e["box"], w, h), e["score"], e["label"]) for e in per_image])
    return out


# ------------------------------------------------------------------ selection
def check_position(position: str) -> str:
    if position not in POSITIONS:
        raise BoxesError(f"position {position!r} is not one of: {', '.join(POSITIONS)}")
    return position


def select(per_image: list[dict], position: str = "all", best_only: bool = False,
           max_detections: int = 0) -> list[dict]:
    """Choose among one image's boxes (already thresholded). Returns a new list, highest score first.

    In this order:
    1. sort by score, highest first (stable: equal scores keep their order);
    2. `position` keeps one box: "left-most" / "right-most" the smallest / largest x-centre,
       "top-most" / "bottom-most" the smallest / largest y-centre, "largest" / "smallest" by area;
       ties go to the higher score. "all" keeps every box;
    3. `best_only` keeps the box with the highest score;
    4. `max_detections` > 0 keeps at most that many (the highest scores); 0 = no limit.
    So "the left lion" is: prompt "lion", position "left-most".
    """
    check_position(position)
    if max_detections is None or int(max_detections) < 0:
        raise BoxesError(f"max_detections must be >= 0 (0 = no limit), got {max_detections}")
    items = sorted((dict(e) for e in per_image), key=lambda e: -e["score"])
    if not items:
        return []
    if position != "all":
        keyfn = {
            "left-most": lambda e: center(e)[0],
            "right-most": lambda e: -center(e)[0],
            "top-most": lambda e: center(e)[1],
            "bottom-most": lambda e: -center(e)[1],
            "largest": lambda e: -area(e),
            "smallest": area,
        }[position]
        items = [min(items, key=keyfn)]  # min() keeps the first (highest score) among equals
    if best_only:
        items = items[:1]
    if max_detections:
        items = items[:int(max_detections)]
    return items


def select_all(boxes, position: str = "all", best_only: bool = False, max_detections: int = 0):
    return [select(per_image, position, best_only, max_detections) for per_image in normalize(boxes)]


# ------------------------------------------------------------------ masks
def boxes_to_mask(boxes, height: int, width: int, batch: int | None = None):
    """MASK (B, H, W) float32: 1 inside any box of that image (see pixel_span), 0 elsewhere.

    `batch` defaults to the number of images in `boxes`; with one image of boxes and batch > 1 the
    boxes apply to every image.
    """
    import torch

    boxes = normalize(boxes)
    b = len(boxes) if batch is None else int(batch)
    if b == 0:
        raise BoxesError("no images: boxes_to_mask needs at least one image (or batch=)")
    if len(boxes) not in (1, b) and boxes:
        raise BoxesError(f"boxes are given for {len(boxes)} images but the batch has {b}")
    mask = torch.zeros((b, int(height), int(width)), dtype=torch.float32)
    for i in range(b):
        per_image = boxes[i if len(boxes) > 1 else 0] if boxes else []
        for e in per_image:
            c0, r0, c1, r1 = pixel_span(e["box"], width, height)
            if c1 > c0 and r1 > r0:
                mask[i, r0:r1, c0:c1] = 1.0
    return mask


# ------------------------------------------------------------------ preview
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the small bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    try:
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        return x1 - x0, y1 - y0
    except AttributeError:  # very old Pillow
        return draw.textsize(text, font=font)


def label_text(entry: dict) -> str:
    label = entry["label"].strip() or "?"
    return f"{label} {entry['score']:.2f}"


def draw_preview(image, boxes, note: str = NO_DETECTION_NOTE):
    """IMAGE (B, H, W, 3) with each image's boxes and labels drawn; images without boxes get `note`.

    Colours follow the label (the same phrase gets the same colour across the batch). Alpha, if any,
    is dropped: the preview is for looking at.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    from ..core.imageops import check_image, from_uint8, to_uint8

    image = check_image(image)[..., :3]
    boxes = normalize(boxes)
    b, h, w = image.shape[:3]
    if len(boxes) not in (0, 1, b):
        raise BoxesError(f"boxes are given for {len(boxes)} images but the image batch has {b}")
    colours: dict[str, tuple] = {}
    out = []
    line = max(1, round(min(h, w) / 200))
    font = _font(max(10, min(32, round(min(h, w) / 30))))
    for i, arr in enumerate(to_uint8(image)):
        per_image = (boxes[i] if len(boxes) == b else boxes[0]) if boxes else []
        im = Image.fromarray(arr, "RGB")
        draw = ImageDraw.Draw(im)
        for e in per_image:
            colour = colours.setdefault(e["label"], _PALETTE[len(colours) % len(_PALETTE)])
            x0, y0, x1, y1 = clamp_box(e["box"], w, h)
            draw.rectangle([x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)], outline=colour, width=line)
            text = label_text(e)
            tw, th = _text_size(draw, text, font)
            ty = y0 - th - 2 * line if y0 - th - 2 * line >= 0 else y0  # above the box, else inside it
            tx = max(0.0, min(x0, w - tw - 2 * line))  # keep the label on the image
            draw.rectangle([tx, ty, tx + tw + 2 * line, ty + th + 2 * line], fill=colour)
            draw.text((tx + line, ty + line), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255),
                      font=font)
        if not per_image and note:
            tw, th = _text_size(draw, note, font)
            pad = max(2, line * 2)
            draw.rectangle([0, 0, min(w - 1, tw + 2 * pad), min(h - 1, th + 2 * pad)], fill=(0, 0, 0))
            draw.text((pad, pad), note, fill=(255, 255, 255), font=font)
        out.append(np.asarray(im))
    return from_uint8(np.stack(out))
