"""The gradient-solver fixture of DESIGN.md (also in torchjd's tests)."""

import numpy as np
import pytest

from hybridmoo.gradmoo import direction, gram, solve
from hybridmoo.gradmoo.pcgrad import project_conflicting

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
PCGRAD_SUM = np.array([0.5848, 3.8012, 3.8012])


def test_gram_of_the_fixture():
    np.testing.assert_array_equal(gram(J), [[18.0, -22.0], [-22.0, 38.0]])


def test_mgda_weights_and_direction():
    w = solve("mgda", gram(J))
    np.testing.assert_allclose(w, [0.6, 0.4], atol=1e-12)
    np.testing.assert_allclose(direction(J, w), [0.0, 1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("orders", [([0, 1], [0, 1]), ([1, 0], [1, 0]), ([0, 1], [1, 0]),
                                    ([1, 0], [0, 1])])
def test_pcgrad_fixture_is_projection_against_the_original_gradients(orders):
    """With two objectives each gradient has one other to be projected against, so every
    order gives the fixture: g1' = g1 + 22/38 g2, g2' = g2 + 22/18 g1 (projecting g2 against
    the *projected* g1' instead would leave g2 unchanged and give [5.47, 2.58, 2.58])."""
    C = project_conflicting(gram(J), orders)
    np.testing.assert_allclose(C, [[1.0, 22 / 38], [22 / 18, 1.0]], atol=1e-15)
    np.testing.assert_allclose(direction(J, C.sum(axis=0)), PCGRAD_SUM, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_pcgrad_sum_direction_for_any_seed(seed):
    w = solve("pcgrad", gram(J), rng=np.random.default_rng(seed))
    np.testing.assert_allclose(direction(J, w), PCGRAD_SUM, atol=1e-4)
    w_mean = solve("pcgrad", gram(J), rng=np.random.default_rng(seed), reduction="mean")
    np.testing.assert_allclose(w_mean, w / 2)
