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
