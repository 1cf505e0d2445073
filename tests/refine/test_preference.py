"""Preferences aimed at the front's gaps, and the refinement settings."""

import numpy as np
import pytest

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Objective
from hybridmoo.refine import RefineSettings, gap_preference, refinement_preference

FRONT = np.array([[-0.99, 4.0, 400.0],   # most accurate, slowest, largest
                  [-0.95, 2.0, 200.0],
                  [-0.80, 1.0, 100.0]])  # least accurate, fastest, smallest


@pytest.mark.parametrize("F, index", [(np.zeros((0, 2)), 0), (np.array([[np.nan, 1.0]]), 0),
                                      (np.ones((2, 2)), 2), (np.ones(3), 0)])
def test_bad_fronts_are_config_errors(F, index):
    with pytest.raises(ConfigError):
        gap_preference(F, index, np.zeros(2), np.ones(2))


def test_gap_preference_aims_at_the_gap_next_to_the_point():
    # a 2-D front with a wide gap between points 1 and 2 (minimisation)
    F = np.array([[0.0, 1.0], [0.1, 0.9], [0.9, 0.1], [1.0, 0.0]])
    ideal, nadir = F.min(axis=0), F.max(axis=0)
    (p1, g1), (p2, g2) = (gap_preference(F, i, ideal, nadir, step=0.05) for i in (1, 2))
    assert p1.sum() == pytest.approx(1.0) and np.all(p1 > 0)
    assert p1[1] > 0.8 and p2[0] > 0.8  # each steps into the gap
    # the move is relative: 5 % of 0.9 into a gap 0.8 wide adds a 0.045 x 0.8 slab
    assert g1 == pytest.approx(0.05 * 0.9 * 0.8) and g2 == pytest.approx(g1)
    _, g0 = gap_preference(F, 0, ideal, nadir, step=0.05)  # crowded on both sides: adds less
    assert g0 < g1 / 2
    # one step per objective: a point whose cost cannot move turns to its error
    p_err, _ = gap_preference(F, 1, ideal, nadir, step=[0.5, 1e-6])
    assert p_err[0] > 0.8
    # a front that is one point: every step adds the same, the preference is uniform
    alone, _ = gap_preference(np.ones((1, 2)), 0, np.ones(2), np.ones(2))
    assert np.allclose(alone, 0.5)
    with pytest.raises(ConfigError):
        gap_preference(F, 4, ideal, nadir)
    with pytest.raises(ConfigError):
        gap_preference(F, 0, ideal, nadir, step=[0.1, 0.0])


def test_search_objectives_map_onto_task_latency_size():
    objectives = [Objective("accuracy", "max"), Objective("latency_ms"),
                  Objective("size_bytes")]
    first = refinement_preference(FRONT, 0, objectives)
    last = refinement_preference(FRONT, 2, objectives)
    assert first.sum() == pytest.approx(1.0) and np.all(first > 0)
    # aimed at the gaps: the smallest point at more accuracy, the largest more at less cost
    # (at the ends of the front only a thin slab lies beyond a point's own axis)
    assert last[0] > 0.5 and first[0] < last[0] and first[1] > last[1] and first[2] > last[2]
    two = refinement_preference(FRONT[:, :2], 2, objectives[:2])
    assert two[2] == pytest.approx(two.min())  # size: not an objective of this search
    with pytest.raises(ConfigError, match="maps to task"):
        refinement_preference(FRONT[:, :1], 0, [Objective("fairness")])


def test_settings_validate_and_reject_unknown_keys():
    s = RefineSettings.from_dict({"steps": 5, "solver": "cagrad", "solver_options": {"c": 0.2}})
    assert s.steps == 5 and s.to_dict()["solver_options"] == {"c": 0.2}
    for bad in ({"stepz": 3}, {"solver": "nope"}, {"steps": -1}, {"lr": -1.0},
                {"gate_init": 1.0}, {"max_loss_ratio": 1.0}, {"distill": "yes"},
                {"max_prune": 1.0}, {"prune_rounds": 0}, {"step_lr": 0.0}, {"patience": -1},
                {"solver": "mgda", "solver_options": {"c": 0.2}}, {"distill_weight": 2.0}):
        with pytest.raises(ConfigError) as info:
            RefineSettings.from_dict(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="mapping"):
        RefineSettings.from_dict([("steps", 3)])
