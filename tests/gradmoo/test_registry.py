"""The registry, the uniform call and its validation, the helpers and group aggregation."""

import numpy as np
import pytest

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo import (
    SOLVERS,
    aggregate_groups,
    direction,
    get_solver,
    gram,
    solve,
    validate_gram,
)
from hybridmoo.gradmoo.registry import INPUTS

J = np.array([[1.0, 0.5, 0.0], [-0.5, 1.0, 0.2]])


def test_one_record_per_name_and_immutable():
    assert len(SOLVERS) == 12
    for name, spec in SOLVERS.items():
        assert spec.name == name and spec.summary and set(spec.needs) <= set(INPUTS)
    with pytest.raises(TypeError):
        SOLVERS["x"] = SOLVERS["mgda"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        SOLVERS["mgda"].name = "y"  # type: ignore[misc]


def test_unknown_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="mgda"):
        get_solver("mdga")
    with pytest.raises(ConfigError, match="'c'"):
        solve("cagrad", gram(J), alpha=0.5)


def test_missing_and_malformed_inputs_are_value_errors():
    G = gram(J)
    with pytest.raises(ValueError, match="losses"):
        solve("epo", G, preference=[1.0, 1.0])
    with pytest.raises(ValueError, match="preference"):
        solve("linear", G)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        solve("epo", G, losses=[1.0, 1.0, 1.0], preference=[1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        solve("linear", G, preference=[-1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        solve("chebyshev", G, losses=[np.nan, 1.0], preference=[1.0, 1.0])
    with pytest.raises(ValueError, match="Generator"):
        solve("pcgrad", G, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="index"):
        solve("pareto-mtl", G, losses=[1.0, 1.0], preference=np.eye(2))
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        solve("pareto-mtl", G, losses=[1.0, 1.0], preference=[1.0, 1.0], index=0)


def test_inputs_a_solver_does_not_need_are_ignored():
    G = gram(J)
    np.testing.assert_array_equal(solve("mgda", G, losses=[1.0, 2.0], preference=[1.0, 1.0],
                                        rng=np.random.default_rng(0)), solve("mgda", G))


def test_gram_validation():
    with pytest.raises(ValueError, match="square"):
        validate_gram(np.ones((2, 3)))
    with pytest.raises(ValueError, match="square"):
        validate_gram(np.ones((0, 0)))
    with pytest.raises(ValueError, match="infinite"):
        validate_gram([[1.0, np.inf], [np.inf, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        validate_gram([[1.0, 0.5], [0.4, 1.0]])
    with pytest.raises(ValueError, match="semi-definite"):
        validate_gram([[1.0, 2.0], [2.0, 1.0]])
    almost = gram(J) + np.array([[0.0, 1e-13], [0.0, -1e-14]])  # round-off is fine
    G = validate_gram(almost)
    np.testing.assert_array_equal(G, G.T)


def test_gram_and_direction_helpers():
    np.testing.assert_array_equal(gram(J), J @ J.T)
    np.testing.assert_array_equal(direction(J, [1.0, 2.0]), J[0] + 2 * J[1])
    with pytest.raises(ValueError):
        gram(np.ones(3))
    with pytest.raises(ValueError):
        direction(J, [1.0, 2.0, 3.0])


def test_aggregate_groups_solves_per_group_and_concatenates():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(3, 4)), rng.normal(size=(3, 2))
    B[1:] = 0.0  # latency and size do not depend on this group
    d = aggregate_groups([A, B, np.zeros((3, 3))], "mgda")
    np.testing.assert_allclose(d[:4], direction(A, solve("mgda", gram(A))))
    np.testing.assert_allclose(d[4:6], B[0])  # only the task loss moves this group
    np.testing.assert_array_equal(d[6:], 0.0)
    frozen = aggregate_groups([A, B], "mgda", drop_constant=False)  # 0 is in B's hull
    np.testing.assert_array_equal(frozen[4:], 0.0)
    one = aggregate_groups([A], "pcgrad", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(
        one, direction(A, solve("pcgrad", gram(A), rng=np.random.default_rng(3))))


def test_aggregate_groups_passes_the_live_objectives_losses_and_preference():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(3, 4))
    B[1] = 0.0
    L, r = np.array([0.5, 0.9, 0.2]), np.array([1.0, 2.0, 3.0])
    d = aggregate_groups([B], "epo", losses=L, preference=r)
    live = [0, 2]
    expected = solve("epo", gram(B[live]), losses=L[live], preference=r[live])
    np.testing.assert_allclose(d, direction(B[live], expected))
    refs = rng.uniform(0.1, 1.0, (4, 3))
    d = aggregate_groups([B], "pareto-mtl", losses=L, preference=refs, index=2)
    expected = solve("pareto-mtl", gram(B[live]), losses=L[live], preference=refs[:, live],
                     index=2)
    np.testing.assert_allclose(d, direction(B[live], expected))


def test_aggregate_groups_rejects_mismatched_groups():
    with pytest.raises(ValueError):
        aggregate_groups([], "mgda")
    with pytest.raises(ValueError):
        aggregate_groups([np.ones((2, 3)), np.ones((3, 3))], "mgda")
