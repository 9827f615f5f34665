"""A run's progress: the tqdm bar on a terminal, a plain line every few seconds anywhere else.

A tqdm bar redraws itself with a carriage return at each update. On a terminal
that is one line that moves; in a log file (``nohup``, CI, ``2> train.log``) every
redraw is kept, and a 7000-step ``minillm train`` wrote 440 KB of them. So when the
stream is not a terminal, :class:`PlainProgress` writes one ordinary line at most
every ``interval`` seconds, and one more when it closes::

    sft 1200/3500 steps (34%), 1:40 elapsed, 12.0 steps/s, 3:12 left, loss=0.1234 lr=9.10e-04

Both have tqdm's methods that the run loop calls: ``update``, ``set_postfix``,
``write`` (a line above the bar) and ``close``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

INTERVAL_S = 10.0  # seconds between two plain lines


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "step",
                 enabled: bool = True, file: IO[str] | None = None, interval: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> Any:
    """The progress display of a loop of ``total`` units, ``initial`` of them done already.

    ``file`` (default: stderr) a terminal: a tqdm bar; anything else: a
    :class:`PlainProgress` writing a line every ``interval`` seconds (``clock``
    tells the time); ``enabled`` False: a bar that shows nothing.
    """
    file = sys.stderr if file is None else file
    if not enabled or is_terminal(file):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                    file=file, disable=not enabled)
    return PlainProgress(total, initial, desc, unit, file, interval, clock)


def is_terminal(file: IO[str]) -> bool:
    """Whether ``file`` is a terminal (False for a closed stream or one without ``isatty``)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def clock_text(seconds: float) -> str:
    """Seconds as h:mm:ss, or m:ss under an hour (as tqdm writes them)."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainProgress:
    """tqdm's interface as plain lines: one at most every ``interval`` seconds, one at ``close``."""

    def __init__(self, total: int, initial: int, desc: str, unit: str, file: IO[str],
                 interval: float, clock: Callable[[], float]):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file, self.interval, self.clock = file, interval, clock
        self.postfix: dict[str, Any] = {}
        self.start_n, self.start = initial, clock()
        self.last_time, self.last_n = self.start, initial
        self.closed = False

    def update(self, n: int = 1) -> None:
        """``n`` more units done; a line when ``interval`` seconds have passed since the last."""
        self.n += n
        if self.clock() - self.last_time >= self.interval:
            self.show()

    def set_postfix(self, postfix: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """The figures the next line ends with (``key=value``), as tqdm's ``set_postfix``."""
        self.postfix = {**dict(postfix or {}), **kwargs}

    def write(self, line: str) -> None:
        """A line of the caller's (an evaluation's result), as tqdm's ``write``."""
        print(line, file=self.file, flush=True)

    def close(self) -> None:
        """The last line, unless the last one shown already says it all; closing twice is one close."""
        if not self.closed and self.n != self.last_n:
            self.show()
        self.closed = True

    def line(self) -> str:
        """``desc n/total unit (p%), elapsed, rate, time left, key=value ...``."""
        elapsed = self.clock() - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc} {self.n}/{self.total} {self.unit}s{pct}", f"{clock_text(elapsed)} elapsed"]
        if rate > 0:
            parts.append(f"{rate:.1f} {self.unit}s/s")
            if self.total:
                parts.append(f"{clock_text(max(self.total - self.n, 0) / rate)} left")
        figures = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return ", ".join(parts) + (f", {figures}" if figures else "")

    def show(self) -> None:
        """Write the line now."""
        print(self.line(), file=self.file, flush=True)
        self.last_time, self.last_n = self.clock(), self.n
