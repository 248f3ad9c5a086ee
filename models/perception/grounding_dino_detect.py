"""Grounding DINO detection: a text prompt → boxes on every image of a batch, as transformers' processor and
`post_process_grounded_object_detection` give them, on a model from the shared cache (grounding_dino.py).

Public API (the Detect node and GroundedSAM call it):

    detect(spec, image, prompt, box_threshold=0.35, text_threshold=0.25, *, max_detections=0,
           position="all", best_only=False, resolution=None, progress=None) -> list[list[dict]]

    - spec: the VK_DINO_MODEL handle (a ModelSpec from `dino_spec` / the loader node);
    - image: IMAGE tensor (B, H, W, C) float 0..1 (C = 3 or 4; alpha ignored), or one (H, W, C);
    - prompt: "lion . dog" (phrases separated by "." or new lines) or a phrase such as "the left lion";
      empty / only separators → GroundingDinoError;
    - box_threshold: keep a query when its best token probability is > this; text_threshold: a token
      belongs to the box's label when its probability is > this (both 0..1, as the processor's
      post_process_grounded_object_detection);
    - max_detections (0 = no limit), position ("all", "left-most", "right-most", "largest",
      "smallest", "top-most", "bottom-most"), best_only: selection after thresholding, in the order
      documented in boxes.select;
    - resolution: shortest edge the image is resized to before the model (longest edge scaled from
      800/1333); None = the model's image processor setting (800/1333 unless its folder says otherwise);
    - progress: optional callback(done, total), one step per image (ComfyUI's bar is used inside it).
    Returns one list per image of {"box": [x0, y0, x1, y1], "score": float, "label": str} in pixels of
    that image (clamped to it, x1/y1 exclusive), highest score first; [] where nothing was found.
"""
from __future__ import annotations

import math
import re

from ..core.cache import ModelSpec, get_cache
from . import boxes as boxes_mod
from .grounding_dino import DinoBundle
from .grounding_dino_original import GroundingDinoError

DEFAULT_BOX_THRESHOLD = 0.35
DEFAULT_TEXT_THRESHOLD = 0.25
DEFAULT_RESOLUTION = 800
DEFAULT_LONGEST = 1333


def normalize_prompt(prompt) -> str:
    """'Lion . dog' → 'lion. dog.': phrases split at '.' and new lines, lower case, each ending with '.'."""
    text = str(prompt or "")
    parts = [" ".join(p.split()) for p in re.split(r"[.\n\r]+", text)]
    parts = [p.lower() for p in parts if p.strip(" ,;:!?-_'\"")]
    if not parts:
        raise GroundingDinoError(f"the prompt {prompt!r} names nothing to find; write what to detect, e.g. "
                                 "'lion . dog' (phrases separated by '.') or 'the left lion'")
    return ". ".join(parts) + "."


def check_thresholds(box_threshold, text_threshold) -> None:
    for name, v in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0.0 <= float(v) <= 1.0):
            raise GroundingDinoError(f"{name} must be a number from 0 to 1, got {v!r}")


def postprocess(logits, pred_boxes, input_ids, box_threshold: float, text_threshold: float,
                height: int, width: int, tokenizer) -> list[dict]:
    """One image's raw outputs → boxes, as transformers' post_process_grounded_object_detection does it.

    logits (Q, T) and pred_boxes (Q, 4 as cx, cy, w, h in 0..1) of one image; input_ids (L,). A query is
    kept when its highest token probability is > box_threshold; its label is the decoded tokens whose
    probability is > text_threshold (not [CLS], not the last logit column). Boxes are in pixels of a
    (height, width) image, not yet clamped; order is the queries' order.
    """
    import torch

    probs = logits.float().sigmoid()
    scores = probs.max(dim=-1).values
    cx, cy, w, h = pred_boxes.float().unbind(-1)
    corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    corners = corners * torch.tensor([width, height, width, height], dtype=torch.float32, device=corners.device)
    keep = scores > box_threshold
    posmaps = probs[keep] > text_threshold
    posmaps[:, 0] = False
    posmaps[:, probs.shape[-1] - 1:] = False
    ids = input_ids.tolist()
    out = []
    for score, box, posmap in zip(scores[keep].tolist(), corners[keep].tolist(), posmaps):
        token_ids = [ids[i] for i in posmap.nonzero(as_tuple=True)[0].tolist()]
        out.append(boxes_mod.make_box(box, score, tokenizer.decode(token_ids)))
    return out


def _size_for(resolution: int | None):
    if resolution is None:
        return None
    r = int(resolution)
    if r < 32:
        raise GroundingDinoError(f"resolution {r} is too small; use 32 or more (the model's own is 800)")
    return {"shortest_edge": r, "longest_edge": max(r, int(math.ceil(r * DEFAULT_LONGEST / DEFAULT_RESOLUTION)))}


def encode_prompt(bundle: DinoBundle, prompt: str) -> dict:
    caption = normalize_prompt(prompt)
    enc = bundle.tokenizer(caption, return_tensors="pt", return_token_type_ids=True)
    cfg = bundle.model.config
    limit = min(int(cfg.max_text_len), int(cfg.text_config.max_position_embeddings))
    n = int(enc["input_ids"].shape[1])
    if n > limit:
        raise GroundingDinoError(f"the prompt is {n} tokens long; this model reads at most {limit}; shorten it "
                                 "(fewer or shorter phrases)")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": enc.get("token_type_ids", None)}


def run_raw(bundle: DinoBundle, image_chw_uint8, text: dict, resolution: int | None = None):
    """The model's raw output for one image (a uint8 (3, H, W) tensor), as the processor would feed it."""
    import torch

    model = bundle.model
    param = next(model.parameters())
    kwargs = {"return_tensors": "pt"}
    size = _size_for(resolution)
    if size is not None:
        kwargs["size"] = size
    px = bundle.image_processor(images=[image_chw_uint8], **kwargs)
    inputs = {"pixel_values": px["pixel_values"].to(device=param.device, dtype=param.dtype),
              "pixel_mask": px["pixel_mask"].to(param.device) if "pixel_mask" in px else None}
    for k, v in text.items():
        if v is not None:
            inputs[k] = v.to(param.device)
    with torch.inference_mode():
        return model(**inputs)


def detect(spec: ModelSpec, image, prompt: str, box_threshold: float = DEFAULT_BOX_THRESHOLD,
           text_threshold: float = DEFAULT_TEXT_THRESHOLD, *, max_detections: int = 0, position: str = "all",
           best_only: bool = False, resolution: int | None = None, progress=None) -> list[list[dict]]:
    """Boxes for every image of an IMAGE batch (see the module docstring for every argument)."""
    from ..core import host
    from ..core.imageops import check_image, to_uint8

    check_thresholds(box_threshold, text_threshold)
    boxes_mod.check_position(position)
    if max_detections is None or int(max_detections) < 0:
        raise GroundingDinoError(f"max_detections must be >= 0 (0 = no limit), got {max_detections}")
    normalize_prompt(prompt)  # a bad prompt fails before the model is touched
    image = check_image(image)
    b, h, w = image.shape[:3]
    import torch

    results: list[list[dict]] = []
    with get_cache().use(spec) as bundle:
        text = encode_prompt(bundle, prompt)
        bar = host.Progress(b, progress)
        for i in range(b):
            host.throw_if_cancelled()
            chw = torch.from_numpy(to_uint8(image[i, ..., :3])).permute(2, 0, 1).contiguous()
            out = run_raw(bundle, chw, text, resolution)
            found = postprocess(out.logits[0], out.pred_boxes[0], text["input_ids"][0], float(box_threshold),
                                float(text_threshold), h, w, bundle.tokenizer)
            found = [boxes_mod.make_box(boxes_mod.clamp_box(e["box"], w, h), e["score"], e["label"])
                     for e in found]
            results.append(boxes_mod.select(found, position, bool(best_only), int(max_detections)))
            bar.update(1)
    return results
