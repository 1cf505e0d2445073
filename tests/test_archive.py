import itertools

import numpy as np
import pytest

from hybridmoo import Candidate, ConfigError, EvalResult, Objective, ParetoArchive
from hybridmoo.archive import hypervolume, non_dominated_mask

OBJ = (Objective("error", "min"), Objective("latency", "min"))


def result(error, latency, ok=True, constraints=None, i=[0]):  # noqa: B006 (counter)
    i[0] += 1
    values = {"error": error, "latency": latency} if ok else {}
    return EvalResult(Candidate({"i": i[0]}), values, constraints or {}, ok,
                      None if ok else "boom")


def test_front_keeps_non_dominated_feasible_points_in_order():
    archive = ParetoArchive(OBJ)
    points = [(0.5, 5), (0.4, 6), (0.6, 4), (0.45, 6), (0.3, 9), (0.3, 9)]
    joined = [archive.add(result(*p)) for p in points]
    archive.add(result(0, 0, ok=False))
    archive.add(result(0.1, 1, constraints={"budget": 2.0}))  # infeasible
    assert joined == [True, True, True, False, True, True]
    assert [(r.values["error"], r.values["latency"]) for r in archive.front] == [
        (0.5, 5), (0.4, 6), (0.6, 4), (0.3, 9), (0.3, 9)]
    assert len(archive.history) == 8


def test_hypervolume_matches_hand_computation():
    # normalised by fixed ideal (0, 0) and nadir (1, 1), reference point (1.1, 1.1):
    # points (0.2, 0.8) and (0.6, 0.4) dominate 0.9*0.3 + 0.5*0.7 - 0.5*0.3 = 0.47
    archive = ParetoArchive(OBJ, reference={"error": (0, 1), "latency": (0, 1)})
    archive.add(result(0.2, 0.8))
    archive.add(result(0.6, 0.4))
    assert archive.hypervolume() == pytest.approx(0.9 * 0.3 + 0.5 * 0.7 - 0.5 * 0.3)


def test_default_normalisation_uses_the_fronts_ideal_and_nadir():
    archive = ParetoArchive(OBJ)
    archive.add(result(10, 400))
    archive.add(result(30, 200))
    ideal, nadir = archive.bounds()
    assert list(ideal) == [10, 200] and list(nadir) == [30, 400]
    # normalised points (0, 1) and (1, 0): 1.1*0.1 + 0.1*1.1 - 0.1*0.1
    assert archive.hypervolume() == pytest.approx(0.21)


def test_max_objectives_are_negated():
    obj = (Objective("accuracy", "max"), Objective("latency", "min"))
    archive = ParetoArchive(obj, reference={"accuracy": (1, 0), "latency": (0, 1)})
    archive.add(EvalResult(Candidate({"i": 1}), {"accuracy": 0.9, "latency": 0.5}))
    archive.add(EvalResult(Candidate({"i": 2}), {"accuracy": 0.8, "latency": 0.6}))
    assert len(archive.front) == 1
    assert archive.hypervolume() == pytest.approx((1.1 - 0.1) * (1.1 - 0.5))


def test_three_objectives_against_pymoo_and_a_box():
    obj = (*OBJ, Objective("size", "min"))
    archive = ParetoArchive(obj, reference={o.name: (0, 1) for o in obj})
    archive.add(EvalResult(Candidate({"i": 1}), {"error": 0.1, "latency": 0.1, "size": 0.1}))
    assert archive.hypervolume() == pytest.approx(1.0 ** 3)


def test_curve_is_monotone_and_ends_at_the_final_value():
    rng = np.random.default_rng(0)
    archive = ParetoArchive(OBJ)
    for _ in range(60):
        archive.add(result(*rng.random(2)))
    curve = archive.hypervolume_curve()
    assert len(curve) == 60
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert curve[-1] == pytest.approx(archive.hypervolume())


def test_non_dominated_mask_and_empty_front():
    F = np.array([[1, 2], [2, 1], [2, 2], [1, 2]])
    assert non_dominated_mask(F).tolist() == [True, True, False, True]
    assert hypervolume(np.empty((0, 2)), np.zeros(2), np.ones(2)) == 0.0
    assert ParetoArchive(OBJ).hypervolume() == 0.0


def test_reference_must_name_every_objective():
    with pytest.raises(ConfigError, match="misses objective 'latency'"):
        ParetoArchive(OBJ, reference={"error": (0, 1)})
    with pytest.raises(ConfigError, match="unknown objective"):
        ParetoArchive(OBJ, reference={"error": (0, 1), "latency": (0, 1), "x": (0, 1)})
