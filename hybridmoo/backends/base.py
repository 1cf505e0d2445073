"""Backends run evaluations, possibly several at once, and hand back results as they finish."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Backend(ABC, Generic[T, R]):
    """Runs ``fn(item)`` for submitted items on ``workers`` workers, at most ``capacity``
    items submitted and not yet returned (more than ``workers`` when items wait on a worker).

    Use as a context manager (``start`` then ``close``). ``next_done()`` blocks until one
    submitted item is finished and returns ``(item, fn(item))``; ``fn`` is expected not to raise
    (hybridmoo's evaluation wrapper turns failures into results).
    """

    capacity: int = 1
    workers: int = 1

    def __enter__(self) -> Backend[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def start(self, fn: Callable[[T], R]) -> None:
        """Make ``fn`` the function every later ``submit`` runs."""

    @abstractmethod
    def submit(self, item: T) -> None: ...

    @abstractmethod
    def next_done(self) -> tuple[T, R]: ...

    @property
    @abstractmethod
    def in_flight(self) -> int: ...

    def close(self) -> None:
        """Release workers; safe to call twice."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` with up to ``capacity`` at once, yielded as they finish."""
        self.start(fn)
        pending = iter(items)
        for item in pending:
            self.submit(item)
            if self.in_flight >= self.capacity:
                yield self.next_done()[1]
        while self.in_flight:
            yield self.next_done()[1]
