"""Pose and depth (issue 20): each node against the bare library call on the same input, plus the loaders.

    .venv/bin/python bench/pose_depth_bench.py [--quick|--smoke] [--device cuda]

Real-size architectures with random (seeded) weights, built from config objects and written with
`save_pretrained` into transformers folders the pack's loaders read like the downloaded ones (never downloaded):
- ViTPose-base (usyd-community/vitpose-base-simple: ViT-B backbone 768 wide, 12 layers, 256×192 input, simple
  decoder, 17 COCO points);
- Depth Anything V2 Small (depth-anything/Depth-Anything-V2-Small-hf: DINOv2-S 384 wide, 12 layers, 518 px,
  DPT head 48/96/192/384 → 64).
--smoke uses tiny configs (the numbers mean nothing there).

Node vs library, interleaved (minimum of N rounds each):
- VisionKitPoseEstimate (2 person boxes, keypoints + OpenPose drawing + JSON) vs VitPoseImageProcessor →
  VitPoseForPoseEstimation → post_process_pose_estimation on the same boxes;
- VisionKitDepthEstimate (depth IMAGE + raw map) vs `pipeline("depth-estimation")` on the same picture.
"""
from __future__ import annotations

import sys

import harness
import measure
from harness import Row, fresh_cache, goal_row, register

SIZE = {"full": (512, 768), "quick": (512, 768), "smoke": (96, 128)}
BOXES = {"full": [[40, 20, 300, 500], [380, 40, 700, 510]], "smoke": [[4, 4, 60, 90], [60, 8, 124, 92]]}


def vitpose_config(smoke: bool):
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    if smoke:
        bb = VitPoseBackboneConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=[64, 48], patch_size=[16, 16])
    else:  # vitpose-base-simple
        bb = VitPoseBackboneConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, image_size=[256, 192], patch_size=[16, 16])
    return VitPoseConfig(backbone_config=bb, num_labels=17, use_simple_decoder=True, scale_factor=4)


def depth_anything_config(smoke: bool):
    from transformers import DepthAnythingConfig, Dinov2Config

    if smoke:
        return DepthAnythingConfig(
            backbone_config=Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=64, image_size=56, patch_size=14, out_indices=[1, 2, 3, 4],
                                         reshape_hidden_states=False),
            reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    # Depth-Anything-V2-Small-hf
    return DepthAnythingConfig(
        backbone_config=Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518,
                                     patch_size=14, out_indices=[3, 6, 9, 12], reshape_hidden_states=False),
        reassemble_hidden_size=384, reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64, head_hidden_size=32, head_in_index=-1, depth_estimation_type="relative")


def write_folders(root, smoke: bool) -> dict:
    """The two random-weight model folders; returns {kind: (name, params, MB)}."""
    import torch
    from transformers import (
        DepthAnythingForDepthEstimation,
        DPTImageProcessor,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    out = {}
    torch.manual_seed(0)
    pose = VitPoseForPoseEstimation(vitpose_config(smoke)).eval()
    folder = root / "pose" / "vitpose-base-random"
    pose.save_pretrained(str(folder), safe_serialization=True)
    VitPoseImageProcessor(size={"height": 64, "width": 48} if smoke else {"height": 256, "width": 192}) \
        .save_pretrained(str(folder))
    out["pose"] = (folder.name, sum(p.numel() for p in pose.parameters()), _mb(folder))
    torch.manual_seed(1)
    depth = DepthAnythingForDepthEstimation(depth_anything_config(smoke)).eval()
    folder = root / "depth" / "depth-anything-v2-small-random"
    depth.save_pretrained(str(folder), safe_serialization=True)
    side = 56 if smoke else 518
    DPTImageProcessor(size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3, do_pad=False).save_pretrained(str(folder))
    out["depth"] = (folder.name, sum(p.numel() for p in depth.parameters()), _mb(folder))
    return out


def _mb(folder) -> float:
    return sum(f.stat().st_size for f in folder.iterdir()) / 2 ** 20


@register("pose_depth", "Pose (ViTPose-base) and depth (Depth Anything V2 Small): nodes vs transformers")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    pack = harness.import_pack()
    root = ctx.tmp / "pose-depth-models"
    ctx.log("pose/depth: writing the random-weight model folders")
    made = write_folders(root, ctx.smoke)
    notes = {k: f"{'tiny' if ctx.smoke else ('ViTPose-base' if k == 'pose' else 'Depth Anything V2 Small')} "
                f"({n / 1e6:.1f}M params, {mb:.0f} MB), random weights" for k, (_name, n, mb) in made.items()}
    rows = [harness.loader_row(ctx, root, "VisionKitPoseLoader", made["pose"][0], "ViTPose", notes["pose"]),
            harness.loader_row(ctx, root, "VisionKitDepthLoader", made["depth"][0], "Depth Anything", notes["depth"])]
    H, W = SIZE[ctx.mode]
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, H // 8, W // 8, 3, generator=g)
    image = torch.nn.functional.interpolate(image.permute(0, 3, 1, 2), size=(H, W), mode="bilinear",
                                            align_corners=False).permute(0, 2, 3, 1).clamp(0, 1).contiguous()
    rgb = (image[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    rounds = ctx.pick(8, 3, 1)  # the machine is shared: more interleaved rounds for a stable minimum
    with harness.env(VISIONKIT_MODELS_DIR=root), fresh_cache():
        rows.append(_pose_row(ctx, pack, made["pose"][0], root, image, rgb, rounds, notes["pose"]))
        rows.append(_depth_row(ctx, pack, made["depth"][0], root, image, rgb, rounds, notes["depth"]))
    return rows


def _pose_row(ctx, pack, name, root, image, rgb, rounds, note) -> Row:
    import torch
    from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor

    boxes_xyxy = BOXES["smoke" if ctx.smoke else "full"]
    coco = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes_xyxy]
    vk_boxes = [[{"box": b, "score": 1.0, "label": "person"} for b in boxes_xyxy]]
    (spec,) = pack.NODE_CLASS_MAPPINGS["VisionKitPoseLoader"]().load(name, "auto")
    node = pack.NODE_CLASS_MAPPINGS["VisionKitPoseEstimate"]()
    folder = str(root / "pose" / name)
    dtype = torch.float16 if ctx.cuda else torch.float32
    proc = VitPoseImageProcessor.from_pretrained(folder)
    model = VitPoseForPoseEstimation.from_pretrained(folder, dtype=dtype).to(ctx.device).eval()

    def library():  # what a user of transformers writes
        inputs = proc(images=rgb, boxes=[coco], return_tensors="pt").to(ctx.device)
        with torch.inference_mode():
            out = model(pixel_values=inputs["pixel_values"].to(dtype))
        return proc.post_process_pose_estimation(out, boxes=[coco])

    def vk():
        return node.estimate(spec, image, 0.3, boxes=vk_boxes)

    library(), vk()  # warm-up (first-call allocations on both sides)
    ctx.log(f"pose: interleaving the node and transformers, {rounds} rounds")
    times, _ = measure.interleaved({"library": library, "node": vk}, rounds, ctx.sync)
    t_node, t_lib = min(times["node"]), min(times["library"])
    return goal_row("Pose From Photo node vs bare transformers ViTPose (2 people)", t_node / t_lib, "<=", 1.05, "×",
                    f"node {t_node * 1000:.0f} ms (keypoints + OpenPose drawing + JSON), processor + model + "
                    f"post-process {t_lib * 1000:.0f} ms, min of {rounds} interleaved; image {image.shape[2]}×"
                    f"{image.shape[1]}, {note}")


def _depth_row(ctx, pack, name, root, image, rgb, rounds, note) -> Row:
    import torch
    from PIL import Image
    from transformers import pipeline

    (spec,) = pack.NODE_CLASS_MAPPINGS["VisionKitDepthLoader"]().load(name, "auto")
    node = pack.NODE_CLASS_MAPPINGS["VisionKitDepthEstimate"]()
    dtype = torch.float16 if ctx.cuda else torch.float32
    pipe = pipeline("depth-estimation", model=str(root / "depth" / name), device=ctx.device, dtype=dtype)
    pil = Image.fromarray(rgb)

    def library():
        out = pipe(pil)
        out["predicted_depth"].cpu()
        return out

    def vk():
        return node.estimate(spec, image, 0)

    library(), vk()
    ctx.log(f"depth: interleaving the node and pipeline('depth-estimation'), {rounds} rounds")
    times, _ = measure.interleaved({"library": library, "node": vk}, rounds, ctx.sync)
    t_node, t_lib = min(times["node"]), min(times["library"])
    return goal_row("Depth Map node vs pipeline('depth-estimation')", t_node / t_lib, "<=", 1.05, "×",
                    f"node {t_node * 1000:.0f} ms (raw map + ControlNet depth image), pipeline {t_lib * 1000:.0f} ms "
                    f"(predicted_depth + depth picture), min of {rounds} interleaved; image {image.shape[2]}×"
                    f"{image.shape[1]}, {note}")


if __name__ == "__main__":
    sys.exit(harness.main_single("pose_depth"))
