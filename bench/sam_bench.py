"""SAM: 8 boxes vs 1 box on one image (the image is encoded once), and vs re-encoding per box.

Real vit_b encoder sizes (768 wide, 12 blocks, 12 heads) with random weights, CPU, fp32.
usage: .venv/bin/python bench/sam_bench.py [--repeat N]
Goals (issue 4): 8 boxes / 1 box ≤ 1.2×; the pack's 8 boxes well under the per-box re-encode time.
Ratios come from one run (this machine is noisy); never a timed test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
os.environ.setdefault("VISIONKIT_STANDALONE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vk_testing import import_pack

    import_pack()
    from visionkit_pack.models import sam as S

    torch.manual_seed(0)
    sam = S.build_sam(S.SamArch(768, 12, 12, (2, 5, 8, 11))).eval()
    image = torch.rand(512, 768, 3)
    boxes = [[40 + 60 * i, 30 + 40 * i, 200 + 60 * i, 220 + 30 * i] for i in range(8)]
    objs = lambda n: [S.ObjectPrompt(b, [], "box") for b in boxes[:n]]  # noqa: E731

    def timed(fn):
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    S.predict_image(sam, image, objs(1))  # warm-up
    one = timed(lambda: S.predict_image(sam, image, objs(1)))
    eight = timed(lambda: S.predict_image(sam, image, objs(8)))
    per_box = timed(lambda: [S.predict_image(sam, image, [o]) for o in objs(8)])
    print(f"SAM vit_b (random weights), CPU, {torch.get_num_threads()} threads, image 768×512, median of {args.repeat}")
    print("| case | seconds | ratio |")
    print("|---|---|---|")
    print(f"| 1 box | {one:.2f} | 1.00 |")
    print(f"| 8 boxes, one encode | {eight:.2f} | {eight / one:.2f}× (goal ≤ 1.2×) |")
    print(f"| 8 boxes, re-encode per box | {per_box:.2f} | {per_box / one:.2f}× |")
    print(f"8 boxes: the pack takes {eight / per_box:.3f}× the time of re-encoding per box")
    return 0


if __name__ == "__main__":
    sys.exit(main())
