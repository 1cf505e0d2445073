"""A live progress line for long work: steps done, a status text, time elapsed and left."""

from __future__ import annotations

import sys
from types import TracebackType


class Progress:
    """Rich progress bar on stderr with a free status text; does nothing when ``enabled`` is
    False (default: only when stderr is a terminal, so logs stay clean)."""

    def __init__(self, total: int, enabled: bool | None = None, title: str = "work",
                 start: int = 0) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.title = title
        self.start = start
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)


def search_status(front_size: int, hypervolume: float, failed: int) -> str:
    """The live line of a search: front size, best hypervolume so far, failed evaluations."""
    return f"front {front_size}  HV {hypervolume:.4f}  failed {failed}"
