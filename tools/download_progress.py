"""Plain-text progress for the model downloader: a redrawn line on a terminal, a line per 10 % elsewhere."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressBar:
    """Plain-text progress on a stream: a redrawn line on a terminal, a line per 10 % elsewhere."""

    def __init__(self, label: str, total: int | None, start: int = 0, out: TextIO | None = None):
        self.label, self.total, self.done, self.start = label, total, start, start
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.2:
                self._last_draw = now
                self.out.write("\r" + self.line(now))
                self.out.flush()
        elif self.total:
            decile = int(10 * self.done / self.total)
            if decile != self._last_decile and decile < 10:
                self._last_decile = decile
                self.out.write(self.line(now) + "\n")
                self.out.flush()

    def line(self, now: float) -> str:
        rate = (self.done - self.start) / max(now - self.t0, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            return f"  {self.label} [{bar}] {frac * 100:5.1f}%  {human(self.done)} / {human(self.total)}  " \
                   f"{human(rate)}/s"
        return f"  {self.label} {human(self.done)}  {human(rate)}/s"

    def close(self) -> None:
        self.out.write(("\r" if self.tty else "") + self.line(time.monotonic()) + "\n")
        self.out.flush()
