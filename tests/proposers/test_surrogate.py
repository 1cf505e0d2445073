"""Pieces of the surrogate engine that the conformance suite does not reach."""

import numpy as np

from hybridmoo.proposers.surrogate_models import LogWarp


def test_log_warp_is_monotone_invertible_and_spreads_the_best_values():
    y = np.array([0.17, 0.18, 0.2, 0.25, 0.7])
    warp = LogWarp(y)
    z = warp(y)
    assert np.all(np.diff(z) > 0)
    np.testing.assert_allclose(warp.inverse(z), y)
    step = warp(np.array([0.17, 0.18, 0.69, 0.7]))  # the same step: among the best, in the tail
    assert step[1] - step[0] > 10 * (step[3] - step[2])
    below = warp.inverse(z[0] - 10.0)  # optimism can go below the best seen, but not forever
    assert warp.offset < below < y.min()


def test_log_warp_of_a_constant_target_is_finite():
    warp = LogWarp(np.full(4, 3.0))
    assert np.all(np.isfinite(warp(np.full(4, 3.0))))


def _evaluate(proposer, candidates):
    from hybridmoo.objectives import run_evaluation
    from hybridmoo.testing.proposers import OBJECTIVES, toy_evaluate

    proposer.tell([run_evaluation(toy_evaluate, c, OBJECTIVES) for c in candidates])


def test_past_its_random_start_a_batch_is_made_while_results_are_still_out():
    """Parallel workers do not wait for a batch's slowest evaluation: with results pending,
    the next ask fits on what came in and never repeats a config still out."""
    from hybridmoo.proposers import make_proposer
    from hybridmoo.testing.proposers import OBJECTIVES, SPACE

    proposer = make_proposer("surrogate", SPACE, OBJECTIVES, seed=0,
                             n_init=6, batch_size=3)
    start = proposer.ask(6)
    assert proposer.ask(2) == []  # the random start waits for its results
    _evaluate(proposer, start)
    first = proposer.ask(3)
    assert len(first) == 3 and all(c.origin != "init" for c in first)
    _evaluate(proposer, first[:1])  # two still out
    second = proposer.ask(3)
    assert len(second) == 3
    out = {c.key for c in first[1:]}
    assert not out & {c.key for c in second}
    seen = {c.key for c in start + first}
    assert not seen & {c.key for c in second}


def test_a_generational_engine_still_waits_for_its_whole_batch():
    from hybridmoo.proposers import make_proposer
    from hybridmoo.testing.proposers import OBJECTIVES, SPACE

    proposer = make_proposer("nsga2", SPACE, OBJECTIVES, seed=0, pop_size=4)
    batch = proposer.ask(4)
    _evaluate(proposer, batch[:3])
    assert proposer.ask(4) == []
    _evaluate(proposer, batch[3:])
    assert len(proposer.ask(4)) == 4


# -- fits ------------------------------------------------------------------------------------


def test_features_one_hot_categories_and_scale_ordered_values():
    from hybridmoo.proposers.surrogate_models import Features
    from hybridmoo.space import Choice, IntRange, SearchSpace

    space = SearchSpace({"op": Choice(["a", "b", "c"]), "flag": Choice([True, False]),
                         "depth": IntRange(1, 5)})
    Z = Features(space)(np.array([[2, 1, 0], [0, 0, 4]]))
    np.testing.assert_allclose(Z, [[0, 0, 1, 1, 0.0], [1, 0, 0, 0, 1.0]])


def _fitted_problem(failure=None):
    from hybridmoo.proposers.surrogate_models import (
        Features,
        SurrogateProblem,
        fit_quietly,
        make_regressor,
    )
    from hybridmoo.space import IntRange, SearchSpace

    space = SearchSpace({"x": IntRange(0, 9), "y": IntRange(0, 9)})
    X = np.array([[i, j] for i in range(0, 10, 2) for j in range(0, 10, 3)])
    features = Features(space)
    models = [fit_quietly(make_regressor("gp", 0, 10), features(X), X[:, 0] / 9.0),
              fit_quietly(make_regressor("gp", 0, 10), features(X), (9 - X[:, 1]) / 9.0)]
    return SurrogateProblem(space, features, models, 2, failure, kappa=1.0)


def test_a_fitted_gp_predicts_what_it_was_fitted_on_and_the_problem_remembers_it():
    problem = _fitted_problem()
    X = np.array([[3, 4], [7, 1]])
    F, G = problem.predict(X)
    visited, mean, spread = problem.visited()
    assert [tuple(x) for x in visited] == [(3, 4), (7, 1)]
    np.testing.assert_allclose(mean, [[3 / 9, 5 / 9], [7 / 9, 8 / 9]], atol=0.05)
    assert np.all(spread >= 0) and np.all(mean + 1e-12 >= F)  # optimistic: mean - kappa spread
    assert G.shape == (2, 1) and np.all(G <= 0)


def test_pre_screening_drops_configs_predicted_wasted():
    """Failed configs and isomorphic twins (same measured values) teach the classifier what is
    wasted; the inner problem then keeps no prediction for a config like them."""
    from hybridmoo.objectives import EvalResult, Objective
    from hybridmoo.proposers.surrogate_models import Features, failure_classifier
    from hybridmoo.space import Candidate, IntRange, SearchSpace

    space = SearchSpace({"x": IntRange(0, 9), "y": IntRange(0, 9)})
    objectives = (Objective("a"), Objective("b"))
    results = [EvalResult(Candidate({"x": x, "y": y}), {"a": x, "b": y}) if x < 7 else
               EvalResult(Candidate({"x": x, "y": y}), ok=False, reason="boom")
               for x in range(10) for y in range(0, 10, 3)]
    features = Features(space)
    assert failure_classifier(results[:8], objectives, features, space, 0, 20) is None  # all ok
    clf = failure_classifier(results, objectives, features, space, 0, 20)
    problem = _fitted_problem(failure=clf)
    _, G = problem.predict(np.array([[2, 2], [9, 2]]))
    assert G[0, -1] <= 0 < G[1, -1]  # the x = 9 config is predicted to fail
    assert [tuple(x) for x in problem.visited()[0]] == [(2, 2)]
    twins = [EvalResult(Candidate({"x": x, "y": 0}), {"a": 1.0, "b": 1.0}) for x in range(6)]
    clf = failure_classifier(results[:8] + twins, objectives, features, space, 0, 20)
    assert clf is not None  # repeats of one measurement count as wasted


# -- acquisition -----------------------------------------------------------------------------


def test_neighbours_are_every_one_dimension_move():
    from hybridmoo.proposers.acquisition import neighbours

    rows = neighbours(np.array([1, 0, 2]), np.array([3, 2, 4]))
    assert len(rows) == 2 + 1 + 3 == len({tuple(r) for r in rows})
    assert np.all((rows != np.array([1, 0, 2])).sum(axis=1) == 1)


def test_greedy_picks_fill_the_largest_gap_first_and_stop_when_nothing_gains():
    from hybridmoo.proposers.acquisition import greedy_hypervolume_picks

    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    P = np.array([[0.9, 0.9],   # gains a little, then nothing once (0.5, 0.5) is believed
                  [0.5, 0.5],   # fills the middle of the gap: gains most
                  [2.0, 2.0],   # dominated: gains nothing
                  [0.4, 0.6]])  # close to the middle one: gains less once it is believed
    assert greedy_hypervolume_picks(P, front, 4) == [1, 3]  # then nothing gains: stop
    assert greedy_hypervolume_picks(P[[0, 2]], front, 4) == [0]
    draws = np.repeat(P[:, None, :], 2, axis=1)
    draws[1, 1] = [3.0, 3.0]  # pick 2 sees row 1 dominated in its own draw
    assert greedy_hypervolume_picks(draws, front, 2) == [1, 3]


def test_credit_moves_picks_to_the_source_that_buys_more_whatever_the_tell_order():
    from hybridmoo.proposers.acquisition import LOCAL, MODEL, SourceCredit

    front = np.array([[0.0, 1.0], [1.0, 0.0]])

    def credit(order):
        c = SourceCredit()
        c.propose(front, {"m1": MODEL, "m2": MODEL, "l1": LOCAL})
        values = {"m1": np.array([2.0, 2.0]), "m2": None, "l1": np.array([0.5, 0.5])}
        for key in order:
            c.settle(key, values[key])
        return c

    c = credit(["m1", "m2", "l1"])
    assert c.rate(MODEL) == 0.0 and c.rate(LOCAL) > 0
    assert c.local_slots(10) == 9  # local search bought more: all but one pick
    assert credit(["l1", "m2", "m1"]).rate(LOCAL) == c.rate(LOCAL)
    fresh = SourceCredit()
    assert fresh.rate(MODEL) is None and fresh.local_slots(10) == 1  # one probe only
    c.settle("unknown", np.array([0.1, 0.1]))  # results the credit never saw are ignored
    assert c.local_slots(1) == 0


def test_the_late_phase_hands_the_batch_to_local_search_once_it_pays():
    """On zdt1-grid every front member's neighbourhood holds better points, so local search
    buys more than global picks and takes over; with late_phase='model' it never does."""
    from hybridmoo.problems import make_problem
    from hybridmoo.proposers import make_proposer
    from hybridmoo.proposers.acquisition import LOCAL, MODEL

    problem = make_problem("zdt1-grid", dims=4, levels=6)
    options = {"n_init": 6, "batch_size": 6, "inner_pop": 16, "inner_gens": 4}

    def run(late_phase):
        p = make_proposer("surrogate", problem.space, problem.objectives, seed=0,
                          late_phase=late_phase, **options)
        for _ in range(12):
            from hybridmoo.objectives import run_evaluation
            p.tell([run_evaluation(problem.evaluate, c, problem.objectives)
                    for c in p.ask(6)])
        return {s: len(v) for s, v in p.credit.settled.items()}

    auto, model_only = run("auto"), run("model")
    assert auto[LOCAL] > auto[MODEL]
    assert model_only[LOCAL] == 0 and model_only[MODEL] > 0


def test_bad_late_phase_is_a_config_error():
    import pytest

    from hybridmoo import ConfigError
    from hybridmoo.proposers import make_proposer
    from hybridmoo.testing.proposers import OBJECTIVES, SPACE

    with pytest.raises(ConfigError, match="late_phase must be one of"):
        make_proposer("surrogate", SPACE, OBJECTIVES, late_phase="local")
