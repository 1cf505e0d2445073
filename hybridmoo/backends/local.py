"""Evaluation in this process: inline (one at a time, deterministic) or on a thread pool."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from hybridmoo.backends.base import Backend
from hybridmoo.errors import ConfigError


class LocalBackend(Backend[Any, Any]):
    """``workers=1`` runs each item when its result is asked for; ``workers>1`` uses threads
    (useful when evaluate releases the GIL or waits on I/O; it must then be thread-safe)."""

    def __init__(self, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an int >= 1, got {workers!r}")
        self.capacity = self.workers = workers
        self._fn: Callable[[Any], Any] | None = None
        self._queue: deque[Any] = deque()
        self._futures: dict[Future[Any], Any] = {}
        self._pool: ThreadPoolExecutor | None = None

    def start(self, fn: Callable[[Any], Any]) -> None:
        self._fn = fn
        if self.capacity > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="hybridmoo-eval")

    def submit(self, item: Any) -> None:
        if self._fn is None:
            raise RuntimeError("call start(fn) before submit")
        if self._pool is None:
            self._queue.append(item)
        else:
            self._futures[self._pool.submit(self._fn, item)] = item

    def next_done(self) -> tuple[Any, Any]:
        if self._pool is None:
            item = self._queue.popleft()
            return item, self._fn(item)  # type: ignore[misc]
        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: id(f))
        item = self._futures.pop(future)
        return item, future.result()

    @property
    def in_flight(self) -> int:
        return len(self._queue) + len(self._futures)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._futures.clear()
        self._queue.clear()
