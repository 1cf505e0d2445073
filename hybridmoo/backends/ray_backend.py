"""Evaluation on Ray actors: one evaluator actor per worker slot, results taken as they finish.

The function given to :meth:`RayBackend.start` (an
:class:`~hybridmoo.objectives.EvaluationTask` or a :class:`~hybridmoo.tasks.SearchTask`, which
also refines survivors; either may hold a supernet's weights) goes into the object store once;
every actor is built from that one reference. Each actor runs one item at a time; when every
actor is up and busy it holds the next one too (``QUEUE_DEPTH``: it waits on the actor, so the
actor never idles while the driver fits its model or asks for the next candidate). The driver
knows which item each actor runs: an actor whose process dies is replaced, the item it ran
retried (``max_retries`` times, then recorded as failed) and the one waiting behind it
submitted again (a process that dies just after an item ends may take that item's result
with it: the item then counts as the one it died on, and the next one runs again); an item
running past ``timeout_s`` (counted from when it starts) is recorded as failed and its actor
killed and replaced; a lost item's record is the task's ``failed(item, reason)``. Every
submitted item comes back from :meth:`next_done` once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hybridmoo.backends.base import Backend
from hybridmoo.backends.ray_cluster import (
    Connection,
    check_resources,
    connect,
    disconnect,
    require_ray,
)
from hybridmoo.errors import ConfigError, HybridMooError, one_line

OPTIONS = ("address", "num_cpus", "num_gpus", "timeout_s", "max_retries")
QUEUE_DEPTH = 2  # items per actor: the one it runs and the next, waiting on the actor


class RayBackendError(HybridMooError, RuntimeError):
    """Evaluator actors cannot start, or a plain (non-candidate) item was lost or timed out."""


class _Evaluator:
    """The actor: holds the function, runs it on one item at a time."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self._fn = fn

    def ready(self) -> bool:
        return True

    def run(self, item: Any) -> Any:
        return self._fn(item)


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(_Evaluator)


@dataclass
class _Job:
    item: Any
    actor: Any
    attempt: int  # 0 on the first run; counts runs lost to a dead actor
    deadline: float  # time.monotonic() after which it counts as hung (inf while it waits)


class RayBackend(Backend[Any, Any]):
    """``workers`` evaluator actors on a Ray cluster.

    ``address``: "auto", "host:port" or "ray://host:port" joins a running cluster; None joins
    the one in ``RAY_ADDRESS`` (as inside a Ray job) or else starts a private local cluster on
    127.0.0.1 (dashboard on 127.0.0.1, shut down on close); an already initialised Ray
    connection is reused either way (and left running on close). ``num_cpus`` / ``num_gpus``
    are reserved per actor (``num_gpus=0.25`` packs four actors on one GPU). ``timeout_s``
    bounds one evaluation; ``max_retries`` is how often an item whose actor died is run again.
    Needs Ray (``pip install "hybridmoo[ray]"``): without it construction raises
    :class:`~hybridmoo.errors.MissingExtraError`.
    """

    def __init__(self, workers: int = 1, *, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, timeout_s: float | None = None,
                 max_retries: int = 2) -> None:
        require_ray("the ray backend")
        check_options(workers=workers, address=address, num_cpus=num_cpus, num_gpus=num_gpus,
                      timeout_s=timeout_s, max_retries=max_retries)
        self.workers = workers
        self.capacity = workers * QUEUE_DEPTH  # items accepted at once (see QUEUE_DEPTH)
        self.address, self.num_cpus, self.num_gpus = address, float(num_cpus), float(num_gpus)
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.replaced = 0  # actors replaced after dying or hanging (for tests and logs)
        self._connection: Connection | None = None
        self._fn: Callable[[Any], Any] | None = None
        self._fn_ref: Any = None
        self._by_value: list[ModuleType] = []
        self._on: dict[Any, list[Any]] = {}  # ready actor -> run() references on it, in order
        self._starting: dict[Any, Any] = {}  # ready() reference -> actor being built
        self._running: dict[Any, _Job] = {}  # run() reference -> job (running or waiting)
        self._queue: deque[tuple[Any, int]] = deque()  # (item, attempt) waiting for an actor
        self._done: deque[tuple[Any, Any]] = deque()  # finished without a reference (timeouts)
        self._start_failures = 0

    # -- Backend ---------------------------------------------------------------------------

    def start(self, fn: Callable[[Any], Any]) -> None:
        if fn is self._fn:
            return
        if self.in_flight:
            raise RuntimeError("start(fn) with items still in flight")
        import ray

        self._kill_actors()
        if self._connection is None:
            self._connection = connect(self.address, self.workers * self.num_cpus)
            check_resources(self.num_cpus, self.num_gpus)
        self._ship_by_value(fn)
        self._fn, self._fn_ref = fn, ray.put(fn)
        for _ in range(self.workers):
            self._spawn()

    def submit(self, item: Any) -> None:
        if self._fn is None:
            raise RuntimeError("call start(fn) before submit")
        self._queue.append((item, 0))
        self._dispatch()

    def next_done(self) -> tuple[Any, Any]:
        import ray

        while not self._done:
            if not self._running and not self._queue:
                raise RuntimeError("next_done() with nothing in flight")
            refs = [*self._running, *self._starting]
            ready, _ = ray.wait(refs, num_returns=1, timeout=self._wait_s())
            if ready:
                self._settle(ready[0])
            self._expire()
            self._dispatch()
        return self._done.popleft()

    @property
    def in_flight(self) -> int:
        return len(self._queue) + len(self._running) + len(self._done)

    def close(self) -> None:
        self._kill_actors()
        self._queue.clear()
        self._done.clear()
        self._fn = self._fn_ref = None
        if self._by_value:
            import ray.cloudpickle

            for module in self._by_value:
                ray.cloudpickle.unregister_pickle_by_value(module)
            self._by_value.clear()
        disconnect(self._connection)
        self._connection = None

    # -- actors ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "max_restarts": 0,
                                   "max_task_retries": 0}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        actor = _actor_class().options(**options).remote(self._fn_ref)
        self._starting[actor.ready.remote()] = actor

    def _replace(self, actor: Any) -> list[_Job]:
        """Kill ``actor`` and start another; returns the jobs that were on it (in order)."""
        import ray

        lost = [self._running.pop(ref) for ref in self._on.pop(actor, []) if ref in self._running]
        ray.kill(actor, no_restart=True)
        self.replaced += 1
        self._spawn()
        return lost

    def _kill_actors(self) -> None:
        if not (self._on or self._starting or self._running):
            return
        import ray

        for actor in [*self._on, *self._starting.values()]:
            ray.kill(actor, no_restart=True)
        self._on.clear()
        self._starting.clear()
        self._running.clear()

    def _dispatch(self) -> None:
        while self._queue:
            idle = [a for a, refs in self._on.items() if not refs]
            # an item waits behind another only when every actor is up and busy
            free = idle or ([] if self._starting else
                            [a for a, refs in self._on.items() if len(refs) < QUEUE_DEPTH])
            if not free:
                return
            actor = free[0]
            item, attempt = self._queue.popleft()
            ref = actor.run.remote(item)
            self._running[ref] = _Job(item, actor, attempt, math.inf)
            self._on[actor].append(ref)
            self._started(actor)

    def _started(self, actor: Any) -> None:
        """The first item on ``actor`` runs now: its timeout clock starts."""
        refs = self._on.get(actor)
        if refs and self.timeout_s and self._running[refs[0]].deadline == math.inf:
            self._running[refs[0]].deadline = time.monotonic() + self.timeout_s

    # -- results ---------------------------------------------------------------------------

    def _settle(self, ref: Any) -> None:
        """Take one finished reference: an actor became ready, or a job ended."""
        import ray

        if ref in self._starting:
            actor = self._starting.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                self._start_failures += 1
                if self._start_failures > self.max_retries:
                    raise RayBackendError(f"evaluator actors fail to start: "
                                          f"{_last_line(exc)}") from None
                self._replace(actor)
                return
            self._start_failures = 0
            self._on[actor] = []
            return
        job = self._running[ref]
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            # the item it ran is retried; the ones waiting behind it never ran: sent again
            running, *waiting = self._replace(job.actor)
            for other in reversed(waiting):
                self._queue.appendleft((other.item, other.attempt))
            if running.attempt < self.max_retries:
                self._queue.appendleft((running.item, running.attempt + 1))
            else:
                self._fail(running.item, f"evaluator process died {running.attempt + 1} times "
                                         f"(last: {_last_line(exc)})")
            return
        except ray.exceptions.RayTaskError as exc:  # a plain fn raised: hand its error on
            self._finished(ref, job)
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else exc) from None
        self._finished(ref, job)
        self._done.append((job.item, result))

    def _finished(self, ref: Any, job: _Job) -> None:
        del self._running[ref]
        self._on[job.actor].remove(ref)
        self._started(job.actor)

    def _wait_s(self) -> float | None:
        deadlines = [job.deadline for job in self._running.values()]
        soonest = min(deadlines, default=math.inf)
        return None if soonest == math.inf else max(0.0, soonest - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for job in list(self._running.values()):
            if job.deadline <= now and job.actor in self._on:
                hung, *waiting = self._replace(job.actor)
                for other in reversed(waiting):  # they never ran: sent again
                    self._queue.appendleft((other.item, other.attempt))
                self._fail(hung.item, f"timed out after {self.timeout_s:g}s")

    def _fail(self, item: Any, reason: str) -> None:
        """A lost item: the task's failed record for it (an evaluation task's items), else
        an error (a plain function's)."""
        failed = getattr(self._fn, "failed", None)
        if callable(failed):
            self._done.append((item, failed(item, reason)))
            return
        raise RayBackendError(f"item {item!r}: {reason}")

    def _ship_by_value(self, fn: Callable[[Any], Any]) -> None:
        """Modules outside any installed distribution (a script next to a YAML file, a test
        module) may not be importable on the workers: their functions travel by value."""
        import ray.cloudpickle

        installed = importlib.metadata.packages_distributions()
        parts = fn.parts() if callable(getattr(fn, "parts", None)) else [fn]
        for part in parts:
            for owner in (part, type(part)):
                name = getattr(owner, "__module__", None) or ""
                top = name.partition(".")[0]
                module = sys.modules.get(name)
                if (module is None or name == "__main__" or top in sys.stdlib_module_names
                        or top in installed or module in self._by_value):
                    continue
                ray.cloudpickle.register_pickle_by_value(module)
                self._by_value.append(module)


def check_options(*, workers: Any = 1, address: Any = None, num_cpus: Any = 1.0,
                  num_gpus: Any = 0.0, timeout_s: Any = None, max_retries: Any = 2) -> None:
    """Raise :class:`ConfigError` (one line) for a bad Ray backend option."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an int >= 1, got {workers!r}")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"ray.address must be a non-empty string (\"auto\", host:port or "
                          f"ray://host:port) or empty for a local cluster, got {address!r}")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if not _number(value) or value < 0:
            raise ConfigError(f"ray.{name} must be a number >= 0, got {value!r}")
    if num_gpus > 1 and not float(num_gpus).is_integer():
        raise ConfigError(f"ray.num_gpus must be a fraction <= 1 or a whole number, got "
                          f"{num_gpus!r}")
    if timeout_s is not None and (not _number(timeout_s) or timeout_s <= 0):
        raise ConfigError(f"ray.timeout_s must be a number > 0 (seconds), got {timeout_s!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"ray.max_retries must be an int >= 0, got {max_retries!r}")


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(exc).__name__)
