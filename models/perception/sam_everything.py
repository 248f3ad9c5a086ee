"""Segment everything: segment-anything's own `SamAutomaticMaskGenerator` on the cached SAM model.

The generator prompts SAM with a grid of points (points_per_side², optionally again on crops), keeps the
masks whose predicted IoU and stability pass the thresholds, removes duplicates (box NMS) and, with
min_mask_region_area > 0, small islands and holes (OpenCV). VisionKit runs it unchanged on the model the
SAM loader cached (the image is encoded once per image, as the generator does), then sorts the masks by
area, largest first, and draws them in colours for the preview.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import torch

from ..core.cache import ModelSpec, get_cache
from ..core.errors import VisionKitError

MAX_POINTS_PER_SIDE = 64  # 4096 prompts per image (and crop): beyond this it is hours on a CPU
MAX_POINTS_PER_BATCH = 256
MAX_CROP_LAYERS = 2


class SegmentEverythingError(VisionKitError):
    """Settings the generator cannot use; the message says the allowed range."""


@dataclass(frozen=True)
class Settings:
    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    min_mask_region_area: int = 0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    points_per_batch: int = 64

    def check(self) -> None:
        def whole(name, v, lo, hi, tip=""):
            if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
                raise SegmentEverythingError(f"{name} must be a whole number from {lo} to {hi}, got {v!r}{tip}")

        def frac(name, v):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0.0 <= float(v) <= 1.0):
                raise SegmentEverythingError(f"{name} must be a number from 0 to 1, got {v!r}")

        whole("points_per_side", self.points_per_side, 1, MAX_POINTS_PER_SIDE,
              "; 32 is SAM's default, 16 is 4× faster with fewer small masks")
        whole("points_per_batch", self.points_per_batch, 1, MAX_POINTS_PER_BATCH,
              "; lower it when memory runs out")
        whole("crop_n_layers", self.crop_n_layers, 0, MAX_CROP_LAYERS, "; 0 = the whole image only")
        whole("min_mask_region_area", self.min_mask_region_area, 0, 1 << 24, "; 0 = keep small regions")
        frac("pred_iou_thresh", self.pred_iou_thresh)
        frac("stability_score_thresh", self.stability_score_thresh)
        frac("box_nms_thresh", self.box_nms_thresh)

    def generator_kwargs(self) -> dict:
        """The SamAutomaticMaskGenerator arguments these settings are (the tests build the reference with them)."""
        return {"points_per_side": int(self.points_per_side), "points_per_batch": int(self.points_per_batch),
                "pred_iou_thresh": float(self.pred_iou_thresh),
                "stability_score_thresh": float(self.stability_score_thresh),
                "box_nms_thresh": float(self.box_nms_thresh), "crop_n_layers": int(self.crop_n_layers),
                "min_mask_region_area": int(self.min_mask_region_area), "output_mode": "binary_mask"}


def sort_records(records: list[dict]) -> list[dict]:
    """Largest area first; equal areas keep the generator's order."""
    return sorted(records, key=lambda r: -int(r["area"]))


def generate(sam, image_hwc: torch.Tensor, settings: Settings) -> list[dict]:
    """The generator's records for one image (H, W, C float 0..1), sorted by area."""
    from segment_anything import SamAutomaticMaskGenerator

    from ..core.imageops import to_uint8

    gen = SamAutomaticMaskGenerator(sam, **settings.generator_kwargs())
    with torch.inference_mode():
        records = gen.generate(to_uint8(image_hwc[..., :3]))
    gen.predictor.reset_image()
    return sort_records(records)


def palette(n: int) -> torch.Tensor:
    """n distinct colours (golden-ratio hues), (n, 3) float 0..1, the same for the same n."""
    cols = [colorsys.hsv_to_rgb((0.13 + i * 0.618033988749895) % 1.0, 0.75, 0.95) for i in range(n)]
    return torch.tensor(cols, dtype=torch.float32).reshape(n, 3)


def colour_overlay(image_hwc: torch.Tensor, masks: torch.Tensor, alpha: float = 0.55) -> torch.Tensor:
    """Each mask tinted in its own colour; smaller masks (later in area order) are drawn over larger ones."""
    rgb = image_hwc[..., :3].float()
    if masks.numel() == 0 or masks.shape[0] == 0:
        return rgb.clone()
    h, w = rgb.shape[:2]
    label = torch.full((h, w), -1, dtype=torch.long)
    for i, m in enumerate(masks):
        label[m > 0.5] = i
    cols = palette(masks.shape[0])
    covered = label >= 0
    tint = cols[label.clamp_min(0)]
    out = torch.where(covered.unsqueeze(-1), rgb * (1 - alpha) + tint * alpha, rgb)
    return out.clamp(0, 1)


def json_record(r: dict, image_index: int, mask_index: int) -> dict:
    """One mask's facts; `mask` is its index in the node's MASK output (all images' masks in one batch)."""
    return {"image": image_index, "mask": mask_index, "area": int(r["area"]),
            "bbox": [int(round(v)) for v in r["bbox"]],  # x, y, width, height (the generator's XYWH)
            "predicted_iou": round(float(r["predicted_iou"]), 6),
            "stability_score": round(float(r["stability_score"]), 6),
            "point": [round(float(v), 2) for v in r["point_coords"][0]]}


def segment_everything(spec: ModelSpec, image, settings: Settings, max_masks: int = 0):
    """(masks (N, H, W), previews (B, H, W, 3), per-image records) for an IMAGE batch.

    Masks of every image, each image's sorted by area (largest first) and cut to max_masks (0 = all); an image
    where nothing passes the thresholds contributes one empty mask, and its record list is empty.
    """
    from ..core import host
    from ..core.imageops import check_image

    settings.check()
    if not isinstance(max_masks, int) or isinstance(max_masks, bool) or max_masks < 0:
        raise SegmentEverythingError(f"max_masks must be a whole number >= 0 (0 = all), got {max_masks!r}")
    image = check_image(image)
    b, h, w = image.shape[:3]
    masks, previews, report = [], [], []
    offset = 0  # index of the image's first mask in the output batch
    bar = host.Progress(b)
    with get_cache().use(spec) as sam:
        for i in range(b):
            host.throw_if_cancelled()
            records = generate(sam, image[i], settings)
            if max_masks:
                records = records[:max_masks]
            if records:
                m = torch.stack([torch.from_numpy(r["segmentation"]).float() for r in records])
            else:
                m = torch.zeros(0, h, w)
            previews.append(colour_overlay(image[i], m))
            masks.append(m if len(m) else torch.zeros(1, h, w))
            report.append([json_record(r, i, offset + j) for j, r in enumerate(records)])
            offset += max(len(records), 1)
            bar.update(1)
    return torch.cat(masks), torch.stack(previews), report
