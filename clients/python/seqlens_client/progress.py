"""A dependency-free progress bar on stderr, usable as an ``explain_many`` progress callback.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line every 10 %.

>>> import io
>>> out = io.StringIO()
>>> bar = ProgressBar("explain", stream=out, tty=False)
>>> for i in range(1, 11):
...     bar(i, 10)
>>> bar.close()
>>> out.getvalue().splitlines()[-1].startswith("explain 10/10 100%")
True
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    def __init__(self, label: str = "", stream: TextIO | None = None, width: int = 30, tty: bool | None = None,
                 min_interval_s: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty() if tty is None else tty
        self.min_interval_s = min_interval_s
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._done = 0
        self._total: int | None = None
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        self._done, self._total = done, total
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= self.min_interval_s or done == total:
                self._last_draw = now
                self.stream.write("\r" + self._line(now) + "\x1b[K")
                self.stream.flush()
                self._drawn = True
            return
        decile = (10 * done // total) if total else done // 100
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / elapsed
        head = f"{self.label} " if self.label else ""
        if not self._total:
            return f"{head}{self._done} done, {rate:.1f}/s, {elapsed:.0f}s"
        frac = min(1.0, self._done / self._total)
        eta = (self._total - self._done) / rate if rate > 0 else float("inf")
        bar = ("#" * int(frac * self.width)).ljust(self.width, ".") if self.tty else ""
        eta_text = f"ETA {eta:.0f}s" if eta != float("inf") else "ETA ?"
        return (f"{head}{'[' + bar + '] ' if bar else ''}{self._done}/{self._total} {100 * frac:.0f}% "
                f"{rate:.1f}/s {eta_text}")

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
