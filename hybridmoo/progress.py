"""A live progress line for long work: evaluations done, front size, hypervolume, time left."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class SearchProgress:
    """Rich progress bar on stderr; does nothing when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool | None = None, title: str = "search") -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.title = title
        self._bar = None
        self._task = None
        self._start = time.monotonic()

    def __enter__(self) -> SearchProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, status="")
        return self

    def update(self, done: int, front_size: int, hypervolume: float, failed: int) -> None:
        if self._bar is not None:
            status = f"front {front_size}  HV {hypervolume:.4f}  failed {failed}"
            self._bar.update(self._task, completed=done, status=status)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)


class StepProgress:
    """Rich progress bar on stderr for step-wise work (training) with a free status text;
    does nothing when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool | None = None, title: str = "train",
                 start: int = 0) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.title = title
        self.start = start
        self._bar = None
        self._task = None

    def __enter__(self) -> StepProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
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
