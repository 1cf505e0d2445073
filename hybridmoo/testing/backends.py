"""The contract every evaluation backend keeps (subclass :class:`BackendConformance`).

A subclass provides the fixture ``backend`` (a fresh, unstarted :class:`Backend`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hybridmoo.backends import Backend
from hybridmoo.objectives import EvaluationTask
from hybridmoo.space import Candidate
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate


def slow_square(x: int) -> int:
    time.sleep(0.01 * (x % 3))
    return x * x


def wait_for_file(item: tuple[str, str]) -> str:
    """``("wait", path)`` returns once ``path`` exists (60 s at most); ``("go", _)`` at once."""
    kind, path = item
    deadline = time.monotonic() + 60
    while kind == "wait" and not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return kind


class BackendConformance:
    """Tests every backend must pass."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("subclasses provide the `backend` fixture")

    def test_map_returns_every_result_once(self, backend: Backend) -> None:
        with backend:
            assert sorted(backend.map(slow_square, range(20))) == [x * x for x in range(20)]

    def test_submit_and_next_done_pair_items_with_results(self, backend: Backend) -> None:
        with backend:
            backend.start(slow_square)
            for x in range(7):
                backend.submit(x)
            assert backend.in_flight == 7
            pairs = [backend.next_done() for _ in range(7)]
            assert backend.in_flight == 0
            assert sorted(pairs) == [(x, x * x) for x in range(7)]

    def test_capacity_is_positive_and_map_streams(self, backend: Backend) -> None:
        with backend:
            assert backend.capacity >= 1
            stream = backend.map(slow_square, iter(range(5)))
            assert next(stream) in {x * x for x in range(5)}
            assert len(list(stream)) == 4

    def test_a_slow_item_does_not_hold_back_a_finished_one(self, backend, tmp_path) -> None:
        if backend.workers < 2:
            pytest.skip("one item at a time")
        gate = tmp_path / "gate"
        with backend:
            stream = backend.map(wait_for_file, [("wait", str(gate)), ("go", str(gate))])
            first = next(stream)
            gate.touch()  # only now can the waiting item finish: no barrier between results
            assert (first, list(stream)) == ("go", ["wait"])

    def test_runs_the_evaluation_task_and_keeps_failures_as_results(self, backend) -> None:
        task = EvaluationTask(toy_evaluate, OBJECTIVES)
        candidates = [Candidate({"op": "skip", "width": 8, "depth": d, "ratio": 0.5})
                      for d in range(1, 7)]
        assert all(SPACE.contains(c.config) for c in candidates)
        with backend:
            results = list(backend.map(task, candidates))
        assert sorted(r.key for r in results) == sorted(c.key for c in candidates)
        failed = [r for r in results if not r.ok]
        assert len(failed) == 1 and failed[0].config["depth"] == 6

    def test_close_twice_is_harmless(self, backend: Backend) -> None:
        backend.start(slow_square)
        backend.close()
        backend.close()
