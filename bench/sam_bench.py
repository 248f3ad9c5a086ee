"""SAM: 8 boxes vs 1 box on one image (the image is encoded once), vs re-encoding per box, and the
Segment node vs the bare SamPredictor call; plus the loader's cold load vs a cached one.

    .venv/bin/python bench/sam_bench.py [--quick|--smoke] [--device cuda]

Real vit_b sizes (768 wide, 12 blocks, 12 heads, 1024-px input) with random (seeded) weights written to a
.pth file that the pack's loader reads like a downloaded sam_vit_b_01ec64.pth; image 768×512; fp32.
--smoke uses a tiny encoder (the numbers mean nothing there).

The image encoder dominates (seconds) and the decoder is fast (tens of ms per prompt), so on a shared,
noisy machine end-to-end times of one run swing more than the effect measured. The box ratios therefore
come from the two stages timed separately (minimum of N runs each, through SamPredictor exactly as the pack
calls it: one set_image, one batched predict_torch; the encodes are those of the library runs below); the
node's own end-to-end times are in the notes.
Node vs library: VisionKitSAMSegment (1 box) against SamPredictor.set_image + predict, interleaved.
On CUDA an extra row compares the fp16 encoder with fp32.
"""
from __future__ import annotations

import sys

import harness
import measure
from harness import Row, fresh_cache, goal_row, register

VIT_B = (768, 12, 12, (2, 5, 8, 11))
TINY = (32, 2, 2, (1,))
SIZE = {"full": (512, 768), "quick": (512, 768), "smoke": (128, 192)}


def boxes_for(h: int, w: int) -> list:
    """8 overlapping boxes spread over a 768×512 image, scaled to h×w."""
    s = w / 768
    return [[round(v * s) for v in (40 + 60 * i, 30 + 40 * i, 200 + 60 * i, 220 + 30 * i)] for i in range(8)]


def write_weights(path, dims, seed: int = 0) -> int:
    import torch

    harness.import_pack()
    from visionkit_pack.models.perception import sam as S

    torch.manual_seed(seed)
    sam = S.build_sam(S.SamArch(*dims))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return sum(p.numel() for p in sam.parameters())


@register("sam", "SAM vit_b: boxes on one encode, node vs SamPredictor")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    pack = harness.import_pack()
    from segment_anything import SamPredictor
    from visionkit_pack.models.perception import sam as S

    dims = TINY if ctx.smoke else VIT_B
    rounds = ctx.pick(2, 1, 1)
    root = ctx.tmp / "sam-models"
    name = "sam_vit_b_random.pth"
    params = write_weights(root / "sams" / name, dims)
    size = (root / "sams" / name).stat().st_size
    arch_note = (f"{'tiny encoder' if ctx.smoke else 'vit_b'} ({params / 1e6:.0f}M params, {size / 2**20:.0f} MB), "
                 f"random weights")
    rows = [harness.loader_row(ctx, root, "VisionKitSAMLoader", name, "SAM", arch_note)]

    H, W = SIZE[ctx.mode]
    BOXES = boxes_for(H, W)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, H, W, 3, generator=g)
    rgb = S._to_uint8_rgb(image[0])
    node = pack.NODE_CLASS_MAPPINGS["VisionKitSAMSegment"]()
    boxes = lambda n: [[{"box": b, "score": 1.0, "label": "x"} for b in BOXES[:n]]]
    with harness.env(VISIONKIT_MODELS_DIR=root), fresh_cache() as cache:
        (spec,) = pack.NODE_CLASS_MAPPINGS["VisionKitSAMLoader"]().load(name)
        with cache.use(spec) as sam:
            pred = SamPredictor(sam)

            encodes = []

            def library_one_box():  # the bare library call a user would write
                t, _ = measure.timed(lambda: pred.set_image(rgb, image_format="RGB"), ctx.sync)
                encodes.append(t)
                return pred.predict(box=torch.tensor(BOXES[0]).numpy(), multimask_output=True)

            def node_run(n):
                return lambda: node.run(spec, image, boxes=boxes(n))

            ctx.log("SAM: interleaving SamPredictor and the node, 1 box (no warm-up: an encode is seconds)")
            times, _ = measure.interleaved({"library": library_one_box, "node1": node_run(1)}, rounds, ctx.sync)
            node8, _ = measure.timed(node_run(8), ctx.sync)
            encode = min(encodes)  # pred keeps the features of its last set_image for the decode timings
            with torch.inference_mode():
                def decode(n):
                    b = pred.transform.apply_boxes_torch(torch.tensor(BOXES[:n], dtype=torch.float32,
                                                                      device=pred.device), (H, W))
                    return lambda: pred.predict_torch(None, None, b, None, multimask_output=True, return_logits=True)

                n_dec = ctx.pick(4, 2, 1)
                dec1, _ = measure.best_of(n_dec * 2, decode(1), ctx.sync)
                dec8, _ = measure.best_of(n_dec, decode(8), ctx.sync)
            fp16_row = _fp16_row(ctx, pack, name, rgb, encode, rounds) if ctx.cuda else None
    one, eight, per_box = encode + dec1, encode + dec8, 8 * (encode + dec1)
    node1, lib1 = min(times["node1"]), min(times["library"])
    stage = (f"encode {encode:.2f} s, decode 1 box {dec1 * 1000:.0f} ms, 8 boxes {dec8 * 1000:.0f} ms "
             f"(minimum of several runs each); image {W}×{H}, {arch_note}")
    rows += [
        goal_row("SAM 8 boxes vs 1 box on one image", eight / one, "<=", 1.2, "×",
                 f"{stage}; the node end to end: 8 boxes {node8:.2f} s, 1 box {node1:.2f} s ({node8 / node1:.2f}×)"),
        Row("SAM 8 boxes: one encode vs re-encoding per box", eight / per_box, "—", None, "×",
            f"{eight:.2f} s vs {per_box:.2f} s"),
        goal_row("SAM Segment node vs bare SamPredictor call (1 box)", node1 / lib1, "<=", 1.05, "×",
                 f"node {node1:.2f} s, set_image + predict {lib1:.2f} s, min of {rounds} interleaved"),
    ]
    if fp16_row:
        rows.append(fp16_row)
    return rows


def _fp16_row(ctx, pack, name, rgb, fp32_encode, rounds) -> Row:
    """CUDA only: the fp16 encoder (the loader's dtype option) vs fp32."""
    from segment_anything import SamPredictor
    from visionkit_pack.models.core.cache import get_cache

    (spec16,) = pack.NODE_CLASS_MAPPINGS["VisionKitSAMLoader"]().load(name, "fp16")
    with get_cache().use(spec16) as sam16:
        pred = SamPredictor(sam16)
        pred.set_image(rgb, image_format="RGB")
        t16, _ = measure.best_of(rounds + 1, lambda: pred.set_image(rgb, image_format="RGB"), ctx.sync)
    return Row("SAM encoder fp16 vs fp32 (CUDA)", t16 / fp32_encode, "—", None, "×",
               f"fp16 {t16 * 1000:.0f} ms, fp32 {fp32_encode * 1000:.0f} ms")


if __name__ == "__main__":
    sys.exit(harness.main_single("sam"))
