"""Survivor choice and rounds (hybridmoo.scheduling), on hand-made archives."""

from __future__ import annotations

import numpy as np

from hybridmoo import Candidate, EvalResult, Objective
from hybridmoo.archive import ParetoArchive
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
