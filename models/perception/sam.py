"""Segment Anything (segment-anything 1.0): loading with the architecture read from the weights, and
prompt → mask with the image encoded once per image whatever the number of prompts.

Prompts per image are "objects": each box (from VK_BOXES, the points JSON, or a MASK's bounding box)
is one object; include/exclude points join every box that contains them; points outside every box (or
all points when there is no box) form one more object. Objects with the same prompt shape go through
the mask decoder together in one batch.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import torch

from ..core import identify
from ..core.cache import Loaded, ModelSpec
from ..core.errors import VisionKitError
from ..core.weights import WeightsError, load_state_dict, load_strict

SAM_MODEL_TYPE = "VK_SAM_MODEL"  # the ComfyUI socket type of a loaded SAM model

KNOWN = {  # embed dim → name, as segment-anything's registry calls them
    768: "vit_b", 1024: "vit_l", 1280: "vit_h",
}

# Bounds on a prompt. The mask decoder's cost grows with the square of the points in one object
# and its upsampled logits with the number of objects decoded together: 100,000 points asked for 320 GB and
# 20,000 boxes for 84 GB. The points JSON is refused above these limits at validation; boxes from any source
# are decoded DECODE_CHUNK objects at a time, with masks kept as booleans, so the working memory does not
# grow with their number.
MAX_POINTS = 512  # points in the points JSON
MAX_BOXES = 512  # boxes in the points JSON
MAX_OBJECTS = 2048  # objects per image, all sources together (VK_BOXES + JSON + mask prompt)
DECODE_CHUNK = 16  # objects through the mask decoder at once


class SamModelError(VisionKitError):
    """A file in `sams` that is not a segment-anything checkpoint VisionKit can run."""


class SamPromptError(VisionKitError):
    """A prompt that cannot be used (bad JSON, points outside the image, ...)."""


@dataclass(frozen=True)
class SamArch:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn: tuple
    img_size: int = 1024
    patch: int = 16

    @property
    def name(self) -> str:
        return KNOWN.get(self.embed_dim, f"vit_{self.embed_dim}d{self.depth}")


def sam_family(keys) -> str | None:
    """Which segment-anything family the tensor names say ("sam", "hq_sam", "sam2", "mobile_sam"), or None:
    one rule set for the loader (detect_arch) and for identify."""
    if identify.has_prefix(keys, "mask_decoder.hf_token", "mask_decoder.compress_vit_feat"):
        return "hq_sam"
    if identify.has_prefix(keys, "image_encoder.trunk.", "memory_attention.", "sam_mask_decoder."):
        return "sam2"
    if identify.has_prefix(keys, "image_encoder.layers.") and "image_encoder.patch_embed.proj.weight" not in keys:
        return "mobile_sam"
    if identify.has_prefix(keys, "image_encoder.") and identify.has_prefix(keys, "mask_decoder."):
        return "sam"
    return None


def detect_arch(sd: dict, name: str = "file") -> SamArch:
    keys = list(sd)
    family = sam_family(keys)
    if family == "hq_sam":
        raise SamModelError(f"{name} is an HQ-SAM checkpoint: not supported yet. Use an original SAM checkpoint "
                            "(sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth).")
    if family == "sam2":
        raise SamModelError(f"{name} is a SAM 2 checkpoint: not supported yet. Use an original SAM checkpoint.")
    if "image_encoder.patch_embed.proj.weight" not in sd:
        if family == "mobile_sam":
            raise SamModelError(f"{name} is a MobileSAM (TinyViT encoder) checkpoint: not supported yet. Use an "
                                "original SAM checkpoint.")
        raise SamModelError(f"{name} is not a segment-anything checkpoint (no image_encoder.patch_embed); it looks "
                            f"like {identify.what_is(sd, exclude='sam')}. Put a SAM file such as sam_vit_b_01ec64.pth in sams.")
    w = sd["image_encoder.patch_embed.proj.weight"]
    embed, patch = int(w.shape[0]), int(w.shape[-1])
    depth = len({int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    rel = sd.get("image_encoder.blocks.0.attn.rel_pos_h")
    if rel is None or depth == 0:
        raise SamModelError(f"{name}: SAM image encoder without relative positions or blocks; not supported")
    head_dim = int(rel.shape[1])
    pos = sd.get("image_encoder.pos_embed")
    grid = int(pos.shape[1]) if pos is not None else 64
    global_attn = tuple(i for i in range(depth)
                        if int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) == 2 * grid - 1)
    return SamArch(embed, depth, embed // head_dim, global_attn, grid * patch, patch)


def build_sam(arch: SamArch):
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    prompt_dim = 256
    grid = arch.img_size // arch.patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads, patch_size=arch.patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(arch.global_attn), window_size=14,
            out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(arch.img_size, arch.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048,
                                                               num_heads=8),
                                 transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def _build(spec: ModelSpec, device) -> Loaded:
    name = os.path.basename(spec.path)
    try:
        sd = load_state_dict(spec.path)
    except WeightsError as ex:
        raise SamModelError(str(ex)) from ex
    arch = detect_arch(sd, name)
    sam = build_sam(arch)
    load_strict(sam, sd, name, f"SAM {arch.name}", SamModelError)
    dtype = torch.float16 if spec.dtype == "fp16" else torch.float32  # SAM's decoder is fp32-sensitive
    sam.eval().requires_grad_(False).to(device=device, dtype=dtype)
    return Loaded(sam, meta={"arch": f"SAM {arch.name} ({arch.depth} blocks, {arch.embed_dim} wide)"})


def sam_spec(path: str, dtype: str = "fp32") -> ModelSpec:
    return ModelSpec(kind="sam", path=path, build=_build, dtype=dtype)


# ------------------------------------------------------------------ prompts
@dataclass
class ObjectPrompt:
    box: list | None = None  # [x0, y0, x1, y1] pixels, x1/y1 exclusive
    points: list = field(default_factory=list)  # [[x, y, label], ...]
    source: str = ""

    def signature(self) -> tuple:
        return (self.box is not None, len(self.points))


def parse_points_json(text: str | None) -> tuple[list, list]:
    """The `points` widget: {"points": [[x, y, 1|0], ...], "boxes": [[x0, y0, x1, y1], ...]}; '' or {} = none."""
    if text is None or not str(text).strip():
        return [], []
    try:
        data = json.loads(text)
    except RecursionError as ex:
        raise SamPromptError("the points prompt is nested too deeply to be a prompt; expected "
                             '{"points": [[x, y, 1], [x, y, 0]], "boxes": [[x0, y0, x1, y1]]}') from ex
    except json.JSONDecodeError as ex:
        raise SamPromptError(f"the points prompt is not valid JSON ({ex.msg} at character {ex.pos}); expected "
                             '{"points": [[x, y, 1], [x, y, 0]], "boxes": [[x0, y0, x1, y1]]}') from ex
    if not isinstance(data, dict):
        raise SamPromptError('the points prompt must be a JSON object like {"points": [[x, y, 1]], "boxes": []}')
    unknown = set(data) - {"points", "boxes"}
    if unknown:
        shown = sorted(str(k)[:40] for k in unknown)[:5]
        raise SamPromptError(f"the points prompt has unknown key(s) {shown}; use 'points' and 'boxes'")
    points, boxes = data.get("points") or [], data.get("boxes") or []
    for key, value, example in (("points", points, "[[x, y, 1], [x, y, 0]]"), ("boxes", boxes, "[[x0, y0, x1, y1]]")):
        if not isinstance(value, list):
            raise SamPromptError(f"'{key}' must be a list like {example}, not {type(value).__name__} "
                                 f"{json.dumps(value)[:60]}")
    if len(points) > MAX_POINTS:
        raise SamPromptError(f"the points prompt has {len(points)} points; at most {MAX_POINTS} are allowed (SAM's "
                             "cost grows with the square of the points of one object): use fewer points, or boxes")
    if len(boxes) > MAX_BOXES:
        raise SamPromptError(f"the points prompt has {len(boxes)} boxes; at most {MAX_BOXES} are allowed: use fewer "
                             "boxes, or connect many boxes from a detection node (VK_BOXES)")
    for p in points:
        if not (isinstance(p, (list, tuple)) and len(p) in (2, 3) and all(isinstance(v, (int, float)) for v in p)):
            raise SamPromptError(f"point {json.dumps(p)[:60]} is not [x, y, label] (label 1 = include, 0 = exclude)")
        if len(p) == 3 and p[2] not in (0, 1):
            raise SamPromptError(f"point {p!r} has label {p[2]!r}; use 1 (include) or 0 (exclude)")
    for b in boxes:
        if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
            raise SamPromptError(f"box {json.dumps(b)[:60]} is not [x0, y0, x1, y1] in pixels")
        if b[2] <= b[0] or b[3] <= b[1]:
            raise SamPromptError(f"box {b!r} is empty: x1 must be > x0 and y1 > y0")
    return [[float(p[0]), float(p[1]), int(p[2]) if len(p) == 3 else 1] for p in points], \
        [[float(v) for v in b] for b in boxes]


def mask_box(mask: torch.Tensor) -> list | None:
    """Bounding box of a mask's nonzero pixels (x1/y1 exclusive), or None for an empty mask."""
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def build_objects(boxes: list, points: list, width: int, height: int) -> list[ObjectPrompt]:
    for p in points:
        if not (0 <= p[0] < width and 0 <= p[1] < height):
            raise SamPromptError(f"point ({p[0]:g}, {p[1]:g}) is outside the {width}×{height} image; points are in "
                                 "pixels of the (first) image, x from 0 to width-1, y from 0 to height-1")
    objs = []
    for b in boxes:
        x0, y0, x1, y1 = (max(0.0, min(float(b[0]), width)), max(0.0, min(float(b[1]), height)),
                          max(0.0, min(float(b[2]), width)), max(0.0, min(float(b[3]), height)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue  # a box entirely outside the image prompts nothing
        inside = [p for p in points if x0 <= p[0] < x1 and y0 <= p[1] < y1]
        objs.append(ObjectPrompt([x0, y0, x1, y1], inside, "box"))
    loose = [p for p in points if not any(o.box[0] <= p[0] < o.box[2] and o.box[1] <= p[1] < o.box[3]
                                          for o in objs)]
    if any(p[2] == 1 for p in loose):
        objs.append(ObjectPrompt(None, loose, "points"))
    if len(objs) > MAX_OBJECTS:
        raise SamPromptError(f"{len(objs)} prompt objects (boxes) for one image; at most {MAX_OBJECTS} are allowed: "
                             "raise the detection's thresholds or set its max_detections")
    return objs


# ------------------------------------------------------------------ prediction
@dataclass
class SamResult:
    masks: torch.Tensor  # (objects, K, H, W) bool (K = 3 with "all", else 1)
    scores: torch.Tensor  # (objects, K)
    objects: list


def _to_uint8_rgb(image: torch.Tensor):
    return (image[..., :3].detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def predict_image(sam, image_hwc: torch.Tensor, objects: list[ObjectPrompt], multimask: str = "best score",
                  mask_threshold: float = 0.0) -> SamResult:
    """Encode one image once and decode every object prompt (batched by prompt shape)."""
    from segment_anything import SamPredictor

    h, w = int(image_hwc.shape[0]), int(image_hwc.shape[1])
    k = 3 if multimask == "all" else 1
    if not objects:
        return SamResult(torch.zeros(0, k, h, w, dtype=torch.bool), torch.zeros(0, k), [])
    predictor = SamPredictor(sam)
    predictor.set_image(_to_uint8_rgb(image_hwc), image_format="RGB")
    dev = predictor.device
    out_masks: list = [None] * len(objects)
    out_scores: list = [None] * len(objects)
    groups: dict = {}
    for i, o in enumerate(objects):
        groups.setdefault(o.signature(), []).append(i)
    tr = predictor.transform
    for (has_box, npts), group in groups.items():
        for start in range(0, len(group), DECODE_CHUNK):  # bounded working memory, whatever the number of boxes
            idx = group[start:start + DECODE_CHUNK]
            boxes = coords = labels = None
            if has_box:
                b = torch.tensor([objects[i].box for i in idx], dtype=torch.float32, device=dev)
                boxes = tr.apply_boxes_torch(b, (h, w))
            if npts:
                c = torch.tensor([[p[:2] for p in objects[i].points] for i in idx], dtype=torch.float32, device=dev)
                coords = tr.apply_coords_torch(c, (h, w))
                labels = torch.tensor([[p[2] for p in objects[i].points] for i in idx], dtype=torch.int64,
                                      device=dev)
            with torch.inference_mode():
                logits, iou = predictor.predict_torch(coords, labels, boxes, None,
                                                      multimask_output=multimask != "single", return_logits=True)[:2]
            masks, iou = (logits > mask_threshold).cpu(), iou.float().cpu()  # booleans: 1 byte a pixel
            del logits
            if multimask == "best score":
                best = iou.argmax(dim=1)
                ar = torch.arange(len(idx))
                masks, iou = masks[ar, best].unsqueeze(1), iou[ar, best].unsqueeze(1)
            elif multimask == "union":
                masks, iou = masks.any(dim=1, keepdim=True), iou.amax(dim=1, keepdim=True)
            for j, i in enumerate(idx):
                out_masks[i], out_scores[i] = masks[j], iou[j]
    predictor.reset_image()
    return SamResult(torch.stack(out_masks), torch.stack(out_scores), objects)


MULTIMASK = ("best score", "union", "all", "single")


def grow_and_feather(mask: torch.Tensor, dilation: int = 0, feather: int = 0) -> torch.Tensor:
    """(N, H, W) masks: dilate (or erode, when negative) by `dilation` px, then soften edges over `feather` px."""
    if mask.numel() == 0:
        return mask
    m = mask.unsqueeze(1)
    if dilation > 0:
        m = torch.nn.functional.max_pool2d(m, 2 * dilation + 1, stride=1, padding=dilation)
    elif dilation < 0:
        r = -dilation
        m = -torch.nn.functional.max_pool2d(-m, 2 * r + 1, stride=1, padding=r)
    if feather > 0:
        from torchvision.transforms.functional import gaussian_blur

        m = gaussian_blur(m, kernel_size=2 * feather + 1, sigma=max(feather / 2.0, 0.5))
    return m.squeeze(1).clamp(0, 1)


PALETTE = [(30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209),
           (255, 140, 0), (220, 20, 60)]


def overlay(image_hwc: torch.Tensor, masks: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Image with each mask tinted in its own colour and its outline drawn."""
    out = image_hwc[..., :3].clone().float()
    for i, m in enumerate(masks):
        color = torch.tensor(PALETTE[i % len(PALETTE)], dtype=torch.float32) / 255.0
        mm = m.unsqueeze(-1).float()
        out = out * (1 - alpha * mm) + color * (alpha * mm)
        hard = (m > 0.5).float().unsqueeze(0).unsqueeze(0)
        edge = (torch.nn.functional.max_pool2d(hard, 3, 1, 1) - hard).squeeze().bool()
        if edge.any():
            out[edge] = color
    return out.clamp(0, 1)


# ---------------------------------------------------------------- what a file is (core/identify.py)
_NOT_YET = {"sam2": "a SAM 2 checkpoint", "hq_sam": "an HQ-SAM checkpoint",
            "mobile_sam": "a MobileSAM (TinyViT encoder) checkpoint"}


def _what_file(sd, keys) -> str | None:
    family = sam_family(keys)
    if family in _NOT_YET:
        return f"{_NOT_YET[family]}, which VisionKit does not run yet (use an original SAM checkpoint)"
    return f"a SAM (segment-anything) checkpoint: {identify.goes('sam')}" if family == "sam" else None


identify.register("sam", _what_file, order=10, place=identify.Place("sams", "VisionKitSAMLoader"))
