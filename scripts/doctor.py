"""Prints the stack's versions, devices and onnxruntime providers, the model folders VisionKit sees, which
README models are present, and known-bad states with the command that fixes each. Exit 1 on an error."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack():
    spec = importlib.util.spec_from_file_location("visionkit", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["visionkit"] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--models", help="models root to inspect (default: $VISIONKIT_MODELS_DIR or "
                                     "~/.cache/visionkit/models; for ComfyUI use ComfyUI/models)")
    args = ap.parse_args(argv)
    if args.models:
        os.environ["VISIONKIT_MODELS_DIR"] = args.models
    os.environ.setdefault("VISIONKIT_STANDALONE", "1")
    load_pack()
    from visionkit.tools import doctor

    report = {"versions": doctor.versions(), "devices": doctor.devices(),
              "findings": [f.__dict__ for f in doctor.diagnose()], "models": doctor.model_report()}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("VisionKit doctor\n\nVersions:")
        for k, v in report["versions"].items():
            print(f"  {k:24} {v or '-'}")
        d = report["devices"]
        print(f"\nDevices: CUDA {'yes ' + str(d.get('cuda_devices')) if d['cuda'] else 'no'}, "
              f"MPS {'yes' if d['mps'] else 'no'}; onnxruntime providers: {', '.join(d['onnxruntime_providers'])}")
        print("\nModel folders:")
        for row in report["models"]:
            print(f"  {row['key']:15} {', '.join(row['folders'])}  ({len(row['files'])} model(s))")
            for m in row["catalog"]:
                print(f"      [{'x' if m['present'] else ' '}] {m['file']}  ({m['licence']})")
        print("\nChecks:")
        if not report["findings"]:
            print("  all good")
        for f in report["findings"]:
            print(f"  {f['level'].upper():5} {f['what']}")
            if f["fix"]:
                print(f"        fix: {f['fix']}")
    return 1 if any(f["level"] == "error" for f in report["findings"]) else 0


if __name__ == "__main__":
    sys.exit(main())
