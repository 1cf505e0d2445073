"""A toy per-survivor refinement for tests of refinement as backend work (no torch).

:class:`ToyRefineWorker` is a :data:`hybridmoo.tasks.RefineFn`: it "refines" a survivor into
a record 10 % better on every objective, with the survivor's config (which lies in the space),
and a deterministic toy network (a list of numbers from the survivor's key and preference), so
a redone refinement can be compared with the first. It records when and where it ran, and can
inject faults: kill its own worker process (once per survivor, a marker file remembers), or
SIGKILL the search's driver when it starts. A front round's job (:class:`FrontJob`) gives one
record per survivor, 10 % better on its task objectives only (what front tuning moves), with
the survivor's config.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmoo.objectives import EvalResult, Objective
from hybridmoo.preference import axis_of
from hybridmoo.space import FRONT_TUNED, REFINED, Candidate
from hybridmoo.tasks import FrontJob, Refined, RefineJob


def toy_network(job: RefineJob) -> list[float]:
    """What the toy refinement of ``job`` makes: a function of the survivor and preference."""
    text = f"{job.key}:{job.preferences[job.index]}".encode()
    return [b / 255 for b in hashlib.sha256(text).digest()[:8]]


@dataclass(frozen=True)
class ToyRefineWorker:
    """``delay`` seconds per survivor; ``crash_dir``: kill the worker process the first
    ``crashes`` times a survivor is seen; ``kill_pid``: SIGKILL that process (the driver) at
    the first job."""

    delay: float = 0.2
    crash_dir: str | None = None
    kill_pid: int | None = None
    crashes: int = 1

    def __call__(self, job: RefineJob | FrontJob, objectives: tuple[Objective, ...]
                 ) -> Refined | list[Refined]:
        if isinstance(job, FrontJob):
            return self.front(job, objectives)
        start = time.time()
        if self.crash_dir is not None:
            seen = len(list(Path(self.crash_dir).glob(f"crash-{job.key}-*")))
            if seen < self.crashes:
                (Path(self.crash_dir) / f"crash-{job.key}-{seen}").touch()
                os._exit(1)
        if self.kill_pid is not None:
            os.kill(self.kill_pid, signal.SIGKILL)
            time.sleep(30)  # the driver is gone; this actor goes with its cluster
        time.sleep(self.delay)
        values = {o.name: job.survivor.values[o.name] * (0.9 if o.direction == "min" else 1.1)
                  for o in objectives}
        info: dict[str, Any] = {"t0": start, "t1": time.time(), "pid": os.getpid()}
        result = EvalResult(Candidate(dict(job.survivor.config), REFINED, (job.key,)), values,
                            info=info, elapsed_s=time.time() - start)
        return Refined(result, toy_network(job))

    def front(self, job: FrontJob, objectives: tuple[Objective, ...]) -> list[Refined]:
        start = time.time()
        time.sleep(self.delay)
        out = []
        for s in job.survivors:
            values = {o.name: s.values[o.name] * (1.0 if axis_of(o) != "task" else
                                                  0.9 if o.direction == "min" else 1.1)
                      for o in objectives}
            info: dict[str, Any] = {"t0": start, "t1": time.time(), "pid": os.getpid(),
                                    "budget_s": job.budget_s}
            candidate = Candidate(dict(s.config), REFINED, (s.key,), FRONT_TUNED)
            out.append(Refined(EvalResult(candidate, values, info=info,
                                          elapsed_s=time.time() - start), [1.0]))
        return out


def timed_evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`hybridmoo.testing.proposers.toy_evaluate` taking 50 ms, with when it ran and
    in which process (``t0``, ``t1``, ``pid`` in the record's info)."""
    from hybridmoo.testing.proposers import toy_evaluate

    start = time.time()
    time.sleep(0.05)
    return {**toy_evaluate(config), "t0": start, "t1": time.time(), "pid": os.getpid()}
