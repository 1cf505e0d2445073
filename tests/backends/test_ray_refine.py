"""Refinement as backend work on a real local Ray cluster (127.0.0.1): rounds run on the
actors while evaluations go on, and an actor lost during a refinement is replaced."""

from __future__ import annotations

import json
import os

import pytest

from hybridmoo import search
from hybridmoo.backends import RayBackend
from hybridmoo.journal import JOURNAL_FILE
from hybridmoo.search import RefineSchedule
from hybridmoo.testing.proposers import OBJECTIVES, SPACE
from hybridmoo.testing.refine import ToyRefineWorker, timed_evaluate

pytestmark = pytest.mark.ray


def overlapping(history) -> bool:
    refined = [r for r in history if r.candidate.origin == "refine" and r.ok]
    evaluated = [r for r in history if r.candidate.origin != "refine" and "t0" in r.info]
    return bool(refined) and any(e.info["t0"] < r.info["t1"] and r.info["t0"] < e.info["t1"]
                                 for r in refined for e in evaluated)


def test_a_round_runs_on_the_actors_while_evaluations_continue(ray_cluster, tmp_path):
    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.5), every=6, survivors=2)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="surrogate", max_evals=30,
                    seed=0, backend=RayBackend(2), refine=schedule, run_dir=tmp_path / "run",
                    algorithm_options={"n_init": 6, "inner_pop": 16, "inner_gens": 4},
                    progress=False)
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert refined and all(r.ok for r in refined)
    assert overlapping(result.history)  # no draining: the other actor kept evaluating
    assert os.getpid() not in {r.info.get("pid") for r in result.history}  # all on actors
    # refined records lie in the space and were told to the proposer, which learnt from them
    assert all(SPACE.contains(r.config) for r in refined)
    lines = (tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()
    keys = [json.loads(line)["candidate"] for line in lines]
    assert len(lines) == len(result.history) == 30 + len(refined)
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == len(keys)


def test_an_actor_killed_during_a_refinement_is_replaced_and_the_survivor_refined_once(
        ray_cluster, tmp_path):
    backend = RayBackend(2, max_retries=2)
    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.1, crash_dir=str(tmp_path)),
                              every=8, survivors=2, final_round=False)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random", max_evals=16,
                    seed=0, backend=backend, refine=schedule, progress=False)
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert len(refined) == 4 and all(r.ok for r in refined), [r.reason for r in refined]
    parents = [r.candidate.parents for r in refined]
    assert len(set(parents)) == len(parents)  # each survivor refined once
    assert backend.replaced == 4  # every job killed its actor once, then succeeded


def test_an_actor_dying_every_time_makes_a_failed_refinement(ray_cluster, tmp_path):
    backend = RayBackend(2, max_retries=0)
    dies = ToyRefineWorker(delay=0.1, crash_dir=str(tmp_path), crashes=1_000)
    schedule = RefineSchedule(worker=dies, every=8, survivors=1, final_round=False)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random", max_evals=12,
                    seed=0, backend=backend, refine=schedule, progress=False)
    [refined] = [r for r in result.history if r.candidate.origin == "refine"]
    assert not refined.ok and refined.reason.startswith("evaluator process died 1 times")
    assert len([r for r in result.history if r.candidate.origin != "refine"]) == 12
