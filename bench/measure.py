"""Measuring: wall time (one run, best of N, two sides interleaved so a ratio survives a noisy machine) and
the process's memory (RSS now and at peak, from /proc/self/status)."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable


def timed(fn, sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    if sync:
        sync()
    t = time.perf_counter()
    out = fn()
    if sync:
        sync()
    return time.perf_counter() - t, out


def best_of(n: int, fn, sync=None) -> tuple[float, Any]:
    """Minimum time of n runs, and the last result."""
    best, out = float("inf"), None
    for _ in range(max(n, 1)):
        dt, out = timed(fn, sync)
        best = min(best, dt)
    return best, out


def interleaved(fns: dict, rounds: int, sync=None) -> tuple[dict, dict]:
    """Run each function once per round, alternating the order, so every side sees the same machine load.

    Returns ({name: [times]}, {name: last result})."""
    times = {k: [] for k in fns}
    outs: dict = {}
    names = list(fns)
    for r in range(max(rounds, 1)):
        for k in (names if r % 2 == 0 else names[::-1]):
            dt, outs[k] = timed(fns[k], sync)
            times[k].append(dt)
    return times, outs


def status_kb(field: str) -> int | None:
    """A field of /proc/self/status in KB (VmRSS, VmHWM), None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM (resettable), else ru_maxrss (the whole life of the process)."""
    kb = status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024
