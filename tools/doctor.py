"""Environment diagnosis for `scripts/doctor`: versions, devices, providers, model folders, known-bad states.

Each known-bad state comes with the command that fixes it. Pure inspection: nothing is installed,
nothing is downloaded, and the heavy libraries are imported only to check that they import.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import sys
from dataclasses import dataclass

PACKAGES = ("torch", "torchvision", "torchaudio", "diffusers", "transformers", "safetensors", "accelerate",
            "segment-anything", "spandrel", "insightface", "onnxruntime", "onnxruntime-gpu",
            "open_clip_torch", "opencv-python", "opencv-python-headless", "numpy", "Pillow")


@dataclass
class Finding:
    level: str  # "ok" | "warn" | "error"
    what: str
    fix: str = ""


def version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **{p: version(p) for p in PACKAGES}}


def _base(v: str | None) -> tuple[int, ...]:
    if not v:
        return ()
    return tuple(int(x) for x in v.split("+")[0].split(".")[:2] if x.isdigit())


def _local(v: str | None) -> str:
    return v.split("+", 1)[1] if v and "+" in v else ""


def pinned_torch(dist: str, requires: dict | None = None) -> str | None:
    """The torch version a torchvision / torchaudio wheel was built for (its `torch==X` requirement)."""
    reqs = (requires or {}).get(dist) if requires is not None else None
    if reqs is None:
        try:
            reqs = md.requires(dist) or []
        except md.PackageNotFoundError:
            return None
    import re

    for r in reqs:
        m = re.match(r"^torch\s*\(?\s*==\s*([^\s,);]+)", r.split(";")[0])
        if m:
            return m.group(1)
    return None


def check_torch_trio(v: dict, requires: dict | None = None) -> list[Finding]:
    out = []
    t, tv, ta = v.get("torch"), v.get("torchvision"), v.get("torchaudio")
    if not t:
        return [Finding("error", "torch is not installed", "install the torch build for your GPU first "
                                                             "(ComfyUI's install guide), then requirements.txt")]
    base = t.split("+")[0]
    if tv and (want := pinned_torch("torchvision", requires)) and want.split("+")[0] != base:
        out.append(Finding("error", f"torchvision {tv} was built for torch {want}, not {t}: segment-anything and "
                                    "basicsr then fail with 'operator torchvision::nms does not exist'",
                           "pip install the torchvision release built for your torch, from the same index"))
    if ta:
        want = pinned_torch("torchaudio", requires)
        mismatch = (want.split("+")[0] != base) if want else (_base(ta) != _base(t))
        if mismatch or _local(ta) != _local(t):
            out.append(Finding("error", f"torchaudio {ta} was built for another torch than {t}: transformers imports "
                                        "torchaudio whenever it is installed, so AutoImageProcessor and diffusers' "
                                        "AutoencoderKL fail to import",
                               f"pip install torchaudio=={base} from the same index as torch, "
                               "or pip uninstall -y torchaudio"))
    return out


def check_onnxruntime(v: dict) -> list[Finding]:
    if v.get("onnxruntime") and v.get("onnxruntime-gpu"):
        return [Finding("error", f"both onnxruntime {v['onnxruntime']} and onnxruntime-gpu {v['onnxruntime-gpu']} "
                                 "are installed; they write the same 'onnxruntime' folder, so the CUDA provider "
                                 "may be missing or the import broken",
                        "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu")]
    if not v.get("onnxruntime") and not v.get("onnxruntime-gpu"):
        return [Finding("error", "onnxruntime is not installed (face analysis needs it)",
                        "pip install onnxruntime-gpu (x86-64 Linux/Windows) or onnxruntime")]
    return []


def check_opencv(v: dict, has_display: bool) -> list[Finding]:
    gui, headless = v.get("opencv-python"), v.get("opencv-python-headless")
    if gui and headless:
        return [Finding("warn", f"opencv-python {gui} (GUI build) and opencv-python-headless {headless} are both "
                                "installed; they share the cv2 folder and the last one installed wins",
                        "pip uninstall -y opencv-python && pip install --force-reinstall --no-deps "
                        "opencv-python-headless")]
    if gui and not has_display:
        return [Finding("warn", "opencv-python is the GUI build on a machine without a display (it needs libGL)",
                        "pip uninstall -y opencv-python && pip install opencv-python-headless")]
    return []


def check_spandrel() -> list[Finding]:
    """Upscaling runs on spandrel (ComfyUI installs it with its own requirements); basicsr is no longer needed."""
    if not version("spandrel"):
        return [Finding("error", "spandrel is not installed (VisionKit's upscale loader needs it)", "pip install spandrel")]
    return []


def check_imports(names=("diffusers", "transformers", "segment_anything", "insightface", "onnxruntime",
                         "open_clip", "cv2")) -> list[Finding]:
    out = []
    for n in names:
        try:
            importlib.import_module(n)
        except Exception as ex:  # report every failure, whatever it is
            out.append(Finding("error", f"import {n} fails: {type(ex).__name__}: {str(ex).splitlines()[0][:200]}",
                               "see the README's troubleshooting table; ./scripts/doctor lists the usual causes"))
    if not out:
        try:
            from transformers import AutoImageProcessor  # noqa: F401
        except Exception as ex:
            out.append(Finding("error", f"transformers' AutoImageProcessor fails to import ({ex})",
                               "usually a mismatched torchaudio: see the torch trio above"))
    return out


def devices() -> dict:
    import torch

    info = {"cuda": torch.cuda.is_available(), "mps": bool(getattr(torch.backends, "mps", None)
                                                           and torch.backends.mps.is_available())}
    if info["cuda"]:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_version"] = torch.version.cuda
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as ex:
        info["onnxruntime_providers"] = [f"(import failed: {ex})"]
    return info


def diagnose(has_display: bool | None = None) -> list[Finding]:
    import os

    v = versions()
    if has_display is None:
        has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux")
    findings = check_torch_trio(v) + check_onnxruntime(v) + check_opencv(v, has_display) + check_spandrel()
    if (iv := v.get("insightface")) and _base(iv) < (2, 0):
        findings.append(Finding("warn", f"insightface {iv} needs a C++ compiler to install; 2.x is a pure wheel",
                                "pip install -U 'insightface>=2.0'"))
    return findings + check_imports()


def model_report() -> list[dict]:
    """Every VisionKit folder with its files, and each README model present or missing."""
    from ..models.core import folders
    from ..models.core.catalog import CATALOG

    rows = []
    for key in folders.FOLDERS:
        files = folders.list_models(key)
        rows.append({"key": key, "folders": folders.folder_paths_for(key), "files": files,
                     "catalog": [{"name": m.name, "file": m.file, "present": m.file in files or any(
                         f.split("/")[-1] == m.file for f in files), "licence": m.licence}
                                 for m in CATALOG if m.folder == key]})
    return rows
