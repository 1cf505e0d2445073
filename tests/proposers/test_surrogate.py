"""Pieces of the surrogate engine that the conformance suite does not reach."""

import numpy as np

from hybridmoo.proposers.surrogate import _LogWarp


def test_log_warp_is_monotone_invertible_and_spreads_the_best_values():
    y = np.array([0.17, 0.18, 0.2, 0.25, 0.7])
    warp = _LogWarp(y)
    z = warp(y)
    assert np.all(np.diff(z) > 0)
    np.testing.assert_allclose(warp.inverse(z), y)
    step = warp(np.array([0.17, 0.18, 0.69, 0.7]))  # the same step: among the best, in the tail
    assert step[1] - step[0] > 10 * (step[3] - step[2])
    below = warp.inverse(z[0] - 10.0)  # optimism can go below the best seen, but not forever
    assert warp.offset < below < y.min()


def test_log_warp_of_a_constant_target_is_finite():
    warp = _LogWarp(np.full(4, 3.0))
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
