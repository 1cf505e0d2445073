"""Survivor choice and rounds (hybridmoo.scheduling), on hand-made archives."""

from __future__ import annotations

import numpy as np
import pytest

from hybridmoo import Candidate, EvalResult, Objective
from hybridmoo.archive import ParetoArchive
from hybridmoo.errors import ConfigError
from hybridmoo.scheduling import RefineSchedule, Scheduler, choose_survivors, expected_steps

OBJECTIVES = (Objective("error", "min"), Objective("cost", "min"))


def archive_of(points, refined=()):
    archive = ParetoArchive(OBJECTIVES)
    for i, (e, c) in enumerate(points):
        archive.add(EvalResult(Candidate({"i": i}), {"error": e, "cost": c}))
    for parent, pref in refined:
        r = EvalResult(Candidate({"i": 100 + len(archive)}, "refine", (parent,)),
                       {"error": 9.0, "cost": 9.0}, info={"front_preference": pref})
        archive.add(r)
    return archive


# a front with a wide gap between the third and fourth points
POINTS = [(0.0, 1.0), (0.05, 0.95), (0.1, 0.9), (0.9, 0.1), (0.95, 0.05), (1.0, 0.0)]


def test_survivors_are_the_points_that_add_most_hypervolume_aimed_at_the_gap():
    archive = archive_of(POINTS)
    survivors, prefs = choose_survivors(archive, 2)
    assert [s.config["i"] for s in survivors] == [2, 3]  # the two next to the gap
    # each is aimed into the gap: the accurate one at less cost, the cheap one at less error
    assert len(prefs) == 2 and prefs[0][1] > 0.8 > prefs[0][0] and prefs[1][0] > 0.8


def test_the_expected_move_is_what_refinement_achieved_so_far():
    archive = archive_of(POINTS[1:])
    assert np.allclose(expected_steps(archive), 0.03)  # nothing refined yet: the prior
    parent = archive.front[0]  # error 0.05, cost 0.95
    archive.add(EvalResult(Candidate({"i": 99}, "refine", (parent.key,)),
                           {"error": 0.04, "cost": 0.95}))
    # a fifth less error, no cost change (counts a little, never nothing)
    assert np.allclose(expected_steps(archive), [0.2, 1e-3])
    # the choice follows: with cost moves this small every survivor is aimed at its error
    _, prefs = choose_survivors(archive, 3)
    assert all(p[0] > p[1] for p in prefs)


def test_a_survivor_refined_under_the_same_preference_is_not_refined_again():
    archive = archive_of(POINTS)
    first, prefs = choose_survivors(archive, 2)
    done = [(s.key, p) for s, p in zip(first, prefs, strict=True)]
    again, _ = choose_survivors(archive_of(POINTS, refined=done[:1]), 2)
    assert first[0].key not in {s.key for s in again}
    # under another preference (refined alone: a uniform one) it may be refined again
    other = [(first[0].key, [0.9, 0.1])]
    assert first[0].key in {s.key for s in choose_survivors(archive_of(POINTS, other), 2)[0]}
    # records refined before preferences were recorded count as refined under any
    legacy = [(s.key, None) for s in first]
    assert not {s.key for s in first} & {
        s.key for s in choose_survivors(archive_of(POINTS, legacy), 2)[0]}


def test_rounds_follow_every_and_the_final_round_runs_once():
    schedule = RefineSchedule(lambda s, a: [], every=5)
    scheduler = Scheduler(schedule, None, [])
    assert not scheduler.round_due(4) and scheduler.round_due(5)
    todo = scheduler.next_round(archive_of(POINTS))
    assert todo is not None and todo.number == 1 and len(todo.jobs()) == 4
    assert not scheduler.round_due(10)  # a round whose records are not all back is active
    for s in todo.survivors:
        todo.stamp(EvalResult(Candidate(s.config, "refine", (s.key,)), {"error": 0, "cost": 0}))
    assert scheduler.finished()
    assert not scheduler.round_due(9) and scheduler.round_due(10)
    assert scheduler.final_round_due() and not scheduler.final_round_due()


def timed_archive(points, seconds=1.0):
    archive = ParetoArchive(OBJECTIVES)
    for i, (e, c) in enumerate(points):
        archive.add(EvalResult(Candidate({"i": i}), {"error": e, "cost": c}, elapsed_s=seconds))
    return archive


def test_the_final_phase_opens_with_a_front_round_of_the_whole_front():
    from hybridmoo.tasks import FrontJob
    from hybridmoo.testing.refine import ToyRefineWorker

    schedule = RefineSchedule(worker=ToyRefineWorker(), every=None, front_round=True)
    scheduler = Scheduler(schedule, None, [])
    archive = timed_archive(POINTS)
    todo = scheduler.next_round(archive, final=True)
    assert todo is not None and todo.front and len(todo.survivors) == len(POINTS)
    assert todo.preferences == [[1.0, 0.0]] * len(POINTS)  # the task objective only
    (job,) = todo.jobs(budget_s=12.0)
    assert isinstance(job, FrontJob) and job.budget_s == 12.0
    assert [s.key for s in job.survivors] == todo.keys
    assert todo.to_json()["front"] is True
    for s in todo.survivors:
        todo.stamp(EvalResult(Candidate(s.config, "refine", (s.key,), "front"),
                              {"error": 0, "cost": s.values["cost"]}))
    assert scheduler.finished()
    after = scheduler.next_round(archive, final=True)  # later final rounds: one by one
    assert after is not None and not after.front and len(after.survivors) == 4
    with pytest.raises(ConfigError, match="front_round"):
        RefineSchedule(lambda s, a: [], front_round=True)


def test_under_a_deadline_the_front_round_takes_what_measuring_can_hold():
    """Ten points of 1 s each, 10 s left: measuring 4 of them takes FRONT_MEASURE_SHARE of
    the time; the 4 whose accuracy lift adds most hypervolume: on this front the point before
    the gap, not its crowded neighbours."""
    from hybridmoo.scheduling import FRONT_MEASURE_SHARE, front_survivors

    points = [(0.1 * i, 1.0 - 0.1 * i) for i in range(5)] + [
        (0.9 + 0.02 * i, 0.1 - 0.02 * i) for i in range(5)]
    archive = timed_archive(points)
    assert front_survivors(archive, None) == archive.front
    picked = front_survivors(archive, 10.0)
    assert len(picked) == int(FRONT_MEASURE_SHARE * 10.0)
    assert picked == [r for r in archive.front if r in picked]  # kept in front order
    errors = [r.values["error"] for r in picked]
    assert 0.4 in errors and not {0.1, 0.2, 0.3} & {round(e, 6) for e in errors}


def test_front_tuned_records_do_not_count_as_refinement_moves():
    archive = archive_of(POINTS[1:])
    parent = archive.front[0]
    archive.add(EvalResult(Candidate(parent.config, "refine", (parent.key,), "front"),
                           {"error": 0.01, "cost": 0.95}))
    assert np.allclose(expected_steps(archive), 0.03)  # still the prior


def test_a_front_round_a_crash_cut_short_resumes_as_a_front_round():
    from hybridmoo.scheduling import _unfinished_round

    archive = timed_archive(POINTS)
    survivors = archive.front
    last = {"round": 1, "survivors": [s.to_json() for s in survivors],
            "preferences": [[1.0, 0.0]] * len(survivors), "told": 6, "front": True}
    done = EvalResult(Candidate(survivors[0].config, "refine", (survivors[0].key,), "front"),
                      {"error": 0.0, "cost": 1.0}, info={"round": 1})
    pending = _unfinished_round([*survivors, done], last)
    assert pending is not None and pending.front
    (job,) = pending.jobs()
    assert [s.key for s in job.survivors] == [s.key for s in survivors[1:]]
