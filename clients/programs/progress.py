"""How rftp shows a transfer going on: the progress bar and BSD ftp's hash marks.

Owns `bar` (pure: one line with percentage, bytes, rate and ETA), `Progress` (redraws it on a
terminal at most `REDRAW` times a second) and `HashMarks` (a ``#`` per block).  It must not
read the network.
"""

from __future__ import annotations

import time
from typing import TextIO

REDRAW = 0.2                # seconds between two redraws of the bar
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(count: float) -> str:
    """``512 B``, ``1.5 KiB``, ``20.0 MiB``."""
    for unit in UNITS:
        if count < 1024 or unit == UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


def bar(done: int, total: int | None, elapsed: float, width: int = 80) -> str:
    """One line for a transfer: ``  42% |#####     | 4.2 MiB  1.1 MiB/s  00:05 ETA``.
    With no known *total* the bar and ETA give way to bytes and rate; at the end the ETA
    becomes the time taken."""
    rate = done / elapsed if elapsed > 0 else 0.0
    stats = f"{human(done):>10}  {human(rate)}/s"
    if total is None or total <= 0:
        return f"{stats}  {clock(elapsed)}"
    fraction = min(done / total, 1.0)
    if done >= total:
        eta = f"{clock(elapsed)}    "
    elif rate > 0:
        eta = f"{clock((total - done) / rate)} ETA"
    else:
        eta = "--:-- ETA"
    tail = f" {stats}  {eta}"
    room = max(width - len(tail) - 8, 10)
    filled = int(room * fraction)
    return f"{fraction * 100:4.0f}% |{'#' * filled}{' ' * (room - filled)}|{tail}"


class Progress:
    """The bar on *out* (a terminal), redrawn in place with CR."""

    def __init__(self, out: TextIO, total: int | None, width: int = 80) -> None:
        self.out = out
        self.total = total
        self.width = width
        self.start = time.monotonic()
        self.done = 0
        self._drawn = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._drawn >= REDRAW:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.out.write("\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        self.out.write("\r" + bar(self.done, self.total, now - self.start, self.width - 1))
        self.out.flush()


class HashMarks:
    """A ``#`` for every *size* bytes, as BSD ftp's ``hash`` prints them."""

    def __init__(self, out: TextIO, size: int = 1024) -> None:
        self.out = out
        self.size = size
        self.done = 0

    def update(self, count: int) -> None:
        before = self.done // self.size
        self.done += count
        marks = self.done // self.size - before
        if marks:
            self.out.write("#" * marks)
            self.out.flush()

    def finish(self) -> None:
        if self.done >= self.size:
            self.out.write("\n")
            self.out.flush()
