"""Depth maps for ControlNet depth: transformers depth estimation (Depth Anything V2, DPT) through the shared cache.

The model is a transformers folder in the `depth` model folder (config.json with model_type "depth_anything"
or "dpt" + weights + preprocessor_config.json), e.g. depth-anything/Depth-Anything-V2-Small-hf (Depth Anything
V2 on its DINOv2 backbone) or Intel/dpt-hybrid-midas.

The steps are transformers' own, those of `pipeline("depth-estimation")`: the folder's image processor, the
model, then the processor's `post_process_depth_estimation` resizing the prediction to the image (bicubic).
The two outputs:

- the raw prediction as a float map (B, H, W), what the model says (relative inverse depth for Depth Anything
  and DPT-MiDaS: larger = nearer; metres for metric models), not limited to 0..1;
- the depth image ControlNet depth models were trained on: per image scaled to 0..1 (min → 0, max → 1) as the
  pipeline's `depth` picture (which is that value × 255, truncated to uint8), gray in 3 channels, near =
  bright. Metric models predict distance (near = small), so their map is inverted for the image.

Public API:

    estimate(spec, image, resolution=0, progress=None) -> torch.Tensor (B, H, W) float32, the raw depth
    depth_image(raw, metric=False) -> IMAGE (B, H, W, 3) in 0..1
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.errors import VisionKitError
from . import hf_folder

DEPTH_MODEL_TYPE = "VK_DEPTH_MODEL"  # the ComfyUI socket type of a loaded depth model

SUPPORTED = {"depth_anything": "DepthAnythingForDepthEstimation", "dpt": "DPTForDepthEstimation"}
FOLDER_HINT = ("a transformers depth folder (config.json with model_type 'depth_anything' or 'dpt', "
               "model.safetensors, preprocessor_config.json), e.g. depth-anything/Depth-Anything-V2-Small-hf")
MAX_RESOLUTION = 2048


class DepthError(VisionKitError):
    """A depth model or input VisionKit cannot use; the message says what to do."""


@dataclass
class DepthBundle:
    """What the cache holds for one depth model: the network, its image processor, and whether it is metric."""

    model: object
    processor: object
    metric: bool = False
    info: dict = field(default_factory=dict)

    def vk_modules(self):
        return [self.model]


_OTHER_MODELS = {
    "vitpose": "a ViTPose pose model: put it in models/pose and use 'VisionKit Load Pose Model'",
    "dinov2": "a DINOv2 backbone without a depth head (Depth Anything folders have model_type 'depth_anything')",
    "zoedepth": "a ZoeDepth model, which VisionKit's depth nodes do not run (use Depth Anything V2 or DPT)",
    "grounding-dino": "a Grounding DINO detector: put it in models/grounding-dino",
}


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401  (transformers needs it; imported here so the pack import stays cheap)

    path = spec.path
    name = os.path.basename(path.rstrip(os.sep))
    cfg = hf_folder.read_config(path, DepthError, f"the depth folder needs {FOLDER_HINT}")
    mt = cfg.get("model_type")
    if mt not in SUPPORTED:
        what = _OTHER_MODELS.get(mt, f"a {mt!r} model" if mt else "not a transformers model (no model_type)")
        raise DepthError(f"{name} is {what}, not a depth model VisionKit runs. Put {FOLDER_HINT} into models/depth.")
    if mt == "dpt" and not cfg.get("architectures", ["DPTForDepthEstimation"])[0].endswith("DepthEstimation"):
        raise DepthError(f"{name} is a DPT {cfg['architectures'][0]}, not a depth estimator; use a DPT depth folder "
                         "(e.g. Intel/dpt-hybrid-midas) or Depth Anything V2")
    hf_folder.check_weights(path, DepthError)
    import transformers

    model = hf_folder.from_pretrained(getattr(transformers, SUPPORTED[mt]), path, DepthError, check_fit=True)
    proc = hf_folder.processor(transformers.AutoImageProcessor, path, DepthError) \
        if os.path.isfile(os.path.join(path, "preprocessor_config.json")) else transformers.DPTImageProcessor()
    dtype = hf_folder.finish(model, spec, device)
    metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
    info = {"format": "transformers folder", "architecture": SUPPORTED[mt], "metric": metric, "dtype": dtype}
    return Loaded(DepthBundle(model, proc, metric, info), meta=info)


def depth_spec(path: str, dtype: str = "auto") -> ModelSpec:
    hf_folder.check_dtype(dtype, DepthError)
    return ModelSpec(kind="depth_estimation", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_depth_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    spec = depth_spec(path, dtype)
    return spec, get_cache().load(spec)


def check_resolution(resolution) -> int:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not (
            resolution == 0 or 14 <= resolution <= MAX_RESOLUTION):
        raise DepthError(f"resolution must be 0 (the model's own, 518 for Depth Anything) or a whole number from 14 to "
                         f"{MAX_RESOLUTION}, got {resolution!r}")
    return resolution


def _strip_size(proc, h: int, w: int, size: dict | None) -> dict:
    """Processor options for an image so long and thin that keeping its aspect ratio gives a side of 0 px.

    Depth Anything's processor keeps the aspect ratio with sides a multiple of 14: past about 1:74 (at 518 px)
    the short side rounds to 0 and transformers fails (the pipeline too). Such an image is fitted into the
    model's size instead, its short side raised to one multiple. Every other image: no change ({}).
    """
    if not getattr(proc, "keep_aspect_ratio", False):
        return {}
    size = size or dict(getattr(proc, "size", None) or {})
    th, tw = size.get("height"), size.get("width")
    if not th or not tw:
        return {}
    m = int(getattr(proc, "ensure_multiple_of", 1) or 1)
    # the processor's own choice: the scale closer to 1 of the two
    sh, sw = th / h, tw / w
    scale = sw if abs(1 - sw) < abs(1 - sh) else sh
    if min(round(h * scale / m), round(w * scale / m)) >= 1:
        return {}
    fit = min(th / h, tw / w)
    return {"keep_aspect_ratio": False,
            "size": {"height": max(m, round(h * fit / m) * m), "width": max(m, round(w * fit / m) * m)}}


def run_image(bundle: DepthBundle, rgb_uint8, resolution: int = 0):
    """The pipeline's steps for one image (HWC uint8 numpy): processor → model → post-process; (H, W) float32."""
    import torch

    model = bundle.model
    param = next(model.parameters())
    # channels_last said explicitly: a tiny (1, 1, 3) image would otherwise be read as channels first
    kwargs = {"return_tensors": "pt", "input_data_format": "channels_last"}
    if resolution:
        kwargs["size"] = {"height": int(resolution), "width": int(resolution)}
    kwargs.update(_strip_size(bundle.processor, rgb_uint8.shape[0], rgb_uint8.shape[1], kwargs.get("size")))
    inputs = bundle.processor(images=rgb_uint8, **kwargs)
    with torch.inference_mode():
        out = model(pixel_values=inputs["pixel_values"].to(device=param.device, dtype=param.dtype))
        if out.predicted_depth.dtype != torch.float32:
            out.predicted_depth = out.predicted_depth.float()
        depth = bundle.processor.post_process_depth_estimation(out, [tuple(rgb_uint8.shape[:2])])[0]["predicted_depth"]
    return depth.reshape(rgb_uint8.shape[:2]).float().cpu()


def estimate(spec: ModelSpec, image, resolution: int = 0, progress=None):
    """Raw depth (B, H, W) float32 of every image of an IMAGE batch, at the image's size."""
    import torch

    from ..core import host
    from ..core.imageops import check_image, to_uint8

    resolution = check_resolution(resolution)
    image = check_image(image)
    b = image.shape[0]
    maps = []
    with get_cache().use(spec) as bundle:
        bar = host.Progress(b, progress)
        for i in range(b):
            host.throw_if_cancelled()
            maps.append(run_image(bundle, to_uint8(image[i, ..., :3]), resolution))
            bar.update(1)
    return torch.stack(maps)


def is_metric(spec: ModelSpec) -> bool:
    with get_cache().use(spec) as bundle:
        return bool(bundle.metric)


def normalise(depth):
    """One (H, W) map scaled to 0..1 as the pipeline does it ((d - min) / (max - min)); a flat map is all 0."""
    lo, hi = depth.min(), depth.max()
    if not bool(hi > lo):
        return depth.new_zeros(depth.shape)
    return (depth - lo) / (hi - lo)


def depth_image(raw, metric: bool = False):
    """Raw depth (B, H, W) → the ControlNet depth IMAGE (B, H, W, 3): gray, 0..1, near = bright."""
    import torch

    maps = [normalise(d.float()) for d in raw]
    if metric:  # distances: near is small, so it would be dark
        maps = [1.0 - m for m in maps]
    return torch.stack(maps).clamp(0, 1).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
