"""Progress of long work: steps done, a status text, time elapsed and left.

On a terminal a live rich bar; otherwise (logs, CI, nohup) a plain line on stderr every
``PLAIN_EVERY_S`` seconds and one when the work ends, so a log shows the work is alive.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

PLAIN_EVERY_S = 30.0  # seconds between plain progress lines when stderr is not a terminal


class Progress:
    """Progress on stderr with a free status text. ``enabled``: True a rich bar, False
    nothing, None (default) a rich bar on a terminal, else plain lines (module docstring)."""

    def __init__(self, total: int, enabled: bool | None = None, title: str = "work",
                 start: int = 0, every_s: float = PLAIN_EVERY_S) -> None:
        self.total = total
        self.plain = enabled is None and not sys.stderr.isatty()
        self.enabled = bool(enabled) or enabled is None
        self.title = title
        self.start = start
        self.every_s = every_s
        self._bar = None
        self._task = None
        self._began = self._printed = time.monotonic()
        self._last: tuple[int, str] = (start, "")

    def __enter__(self) -> Progress:
        self._began = self._printed = time.monotonic()
        if self.enabled and not self.plain:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                     TimeElapsedColumn(), TextColumn("left"),
                                     TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, completed=self.start,
                                            status="")
        return self

    def update(self, done: int, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
        self._last = (done, status)
        if self.plain and time.monotonic() - self._printed >= self.every_s:
            self._print_line()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        if self.plain and exc_type is None:  # an error speaks for itself
            self._print_line()

    def _print_line(self) -> None:
        """``title: done/total (share) status, elapsed, ~left`` on stderr."""
        done, status = self._last
        now = time.monotonic()
        elapsed = now - self._began
        share = done / self.total if self.total else 0.0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (f", ~{clock(max(self.total - done, 0) / rate)} left"
                if rate > 0 and done < self.total else "")
        print(f"{self.title}: {done}/{self.total} ({share:.0%})"
              + (f" {status}" if status else "") + f", {clock(elapsed)} elapsed{left}",
              file=sys.stderr, flush=True)
        self._printed = now


def clock(seconds: float) -> str:
    """``seconds`` as ``1h02m03s`` / ``2m03s`` / ``3s``."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def search_status(front_size: int, hypervolume: float, failed: int) -> str:
    """The live line of a search: front size, best hypervolume so far, failed evaluations."""
    return f"front {front_size}  HV {hypervolume:.4f}  failed {failed}"
