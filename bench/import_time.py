"""Pack import time inside a process that has already imported torch (as ComfyUI has), in ms.

usage: .venv/bin/python bench/import_time.py [--repeat N]
Each repetition is a fresh interpreter: import torch, then time the pack's import alone. Prints the
median and the heavy libraries the import pulled in (there must be none). Goal (issue 11): ≤ 300 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("diffusers", "transformers", "segment_anything", "basicsr", "realesrgan", "insightface", "onnxruntime",
         "open_clip", "cv2")

CODE = f"""
import importlib.util, json, sys, time
import torch
t = time.perf_counter()
spec = importlib.util.spec_from_file_location('visionkit', {os.path.join(ROOT, '__init__.py')!r},
                                              submodule_search_locations=[{ROOT!r}])
m = importlib.util.module_from_spec(spec); sys.modules['visionkit'] = m; spec.loader.exec_module(m)
dt = time.perf_counter() - t
print(json.dumps({{'ms': dt * 1000, 'nodes': len(m.NODE_CLASS_MAPPINGS),
                  'heavy': sorted(k for k in sys.modules if k.split('.')[0] in {HEAVY!r})}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs = []
    env = {**os.environ, "VISIONKIT_STANDALONE": "1"}
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ms = statistics.median(r["ms"] for r in runs)
    heavy = sorted({h for r in runs for h in r["heavy"]})
    print(f"pack import beyond torch: median {ms:.1f} ms over {len(runs)} runs "
          f"(min {min(r['ms'] for r in runs):.1f}, max {max(r['ms'] for r in runs):.1f}); "
          f"{runs[0]['nodes']} nodes; goal ≤ 300 ms → ratio {ms / 300:.3f}")
    print("heavy libraries imported:", ", ".join(heavy) if heavy else "none")
    return 1 if heavy else 0


if __name__ == "__main__":
    sys.exit(main())
