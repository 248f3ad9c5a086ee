"""The machine a benchmark ran on: device name, CPU/GPU facts, versions, load (re-exported by the harness)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")
    return re.sub(r"-{2,}", "-", s)


def device_name(kind: str, model: str, cores: int = 0) -> str:
    """'cpu-<model>-<n>cores' or 'cuda-<gpu name>', file-name safe ('Intel(R) Xeon(R) CPU @ 2.20GHz' → 'Intel-Xeon')."""
    if kind == "cuda":
        return _slug(f"cuda-{model}")
    model = re.sub(r"\((R|TM|tm)\)|\bCPU @.*$|\b(\d+-Core )?Processor\b", "", model)
    return _slug(f"cpu-{model}-{cores}cores")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  check=False).stdout.strip() or platform.machine()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def device_info(device: str) -> dict:
    import torch

    info: dict = {"kind": device.split(":")[0], "torch_threads": torch.get_num_threads(), "cpu": cpu_model(),
                  "cores": cpu_count(), "ram_gb": round(_meminfo_kb("MemTotal") / 2**20, 1)}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, capability=f"{p.major}.{p.minor}")
        info["name"] = device_name("cuda", p.name)
    else:
        info["name"] = device_name("cpu", info["cpu"], info["cores"])
    return info


def _meminfo_kb(field: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def available_memory_bytes(device: str) -> int:
    """Free memory for a model on `device`: the GPU's free memory, else MemAvailable (0 if unknown)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return _meminfo_kb("MemAvailable") * 1024


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for n in ("torch", "torchvision", "diffusers", "transformers", "segment-anything", "realesrgan", "basicsr",
              "onnxruntime-gpu", "onnxruntime", "safetensors", "numpy"):
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=False, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, timeout=10).stdout.strip()
        return f"{sha}{' (with uncommitted changes)' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
