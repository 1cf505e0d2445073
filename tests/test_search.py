import math

import pytest

from hybridmoo import (
    Choice,
    ConfigError,
    Constraint,
    IntRange,
    Objective,
    SearchSpace,
    available,
    search,
)
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate

FAST = {"surrogate": {"n_init": 6, "inner_pop": 16, "inner_gens": 4, "n_trees": 10}}


def test_the_documented_black_box_call():
    space = SearchSpace({"op0": Choice(["conv3", "conv1", "skip"]),
                         "width": Choice([16, 32, 64]),
                         "depth": IntRange(1, 4)})

    def evaluate(config: dict) -> dict:
        kernel = {"conv3": 9, "conv1": 1, "skip": 0}[config["op0"]]
        cost = kernel * config["width"] * config["depth"]
        return {"error": 1 / (1 + math.sqrt(cost)) + 0.01 * config["depth"],
                "latency_ms": 0.01 * cost + config["depth"]}

    result = search(space, evaluate,
                    objectives=[Objective("error", "min"), Objective("latency_ms", "min")],
                    max_evals=20, seed=0, progress=False)
    assert len(result.history) == 20
    assert result.front and all(space.contains(r.config) for r in result.front)
    assert set(result.front[0].values) == {"error", "latency_ms"}
    assert len(result.hypervolume_curve) == 20


@pytest.mark.parametrize("algorithm", [s.name for s in available() if s.black_box])
def test_every_engine_spends_the_budget_on_unique_configs(algorithm):
    """Every engine that works on any problem (paretoset needs a model trained for it: see
    tests/paretoset/test_run.py)."""
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm=algorithm, max_evals=40, seed=1,
                    algorithm_options=FAST.get(algorithm), progress=False)
    keys = [r.key for r in result.history]
    assert len(keys) == 40 == len(set(keys))
    assert result.stop_reason == "max_evals=40 reached"
    assert 0 < result.hypervolume <= 1.1 ** 2


def test_a_small_space_is_exhausted_without_repeats():
    space = SearchSpace({"a": Choice([1, 2, 3]), "b": IntRange(0, 3)})
    result = search(space, lambda c: {"x": c["a"], "y": -c["b"]}, [Objective("x"), Objective("y")],
                    algorithm="nsga2", max_evals=100, progress=False)
    assert len(result.history) == 12 == len({r.key for r in result.history})
    assert "no new configuration" in result.stop_reason


def test_failures_are_recorded_and_the_search_goes_on():
    def flaky(config):
        if config["depth"] == 1:
            raise ValueError("depth 1 is broken")
        if config["depth"] == 2:
            return {"error": math.nan, "cost": 1.0}
        if config["depth"] == 3:
            return {"cost": 1.0}
        return toy_evaluate(config)

    result = search(SPACE, flaky, OBJECTIVES, algorithm="random", max_evals=60, seed=0,
                    progress=False)
    reasons = {r.reason.split(":")[0].split(" (")[0] for r in result.failed}
    assert reasons == {"ValueError", "RuntimeError", "objective 'error' is not a finite number",
                       "evaluate did not return objective 'error'"}
    assert len(result.history) == 60 and all(r.ok for r in result.front)


def test_an_objective_never_returned_is_a_setup_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ConfigError, match="did not return objective 'latency'"):
        search(SPACE, toy_evaluate, [Objective("error"), Objective("latency")], max_evals=10,
               run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_constraints_keep_infeasible_points_off_the_front():
    result = search(SPACE, toy_evaluate, OBJECTIVES, constraints=[Constraint("cost", max=300)],
                    algorithm="nsga2", max_evals=80, seed=0, progress=False)
    assert result.front and all(r.values["cost"] <= 300 for r in result.front)
    assert any(not r.feasible for r in result.history if r.ok)
    assert all(r.constraints["cost"] == r.values["cost"] - 300 for r in result.history if r.ok)


def test_max_objectives_and_three_objectives():
    objectives = [Objective("error"), Objective("cost"), Objective("accuracy_proxy", "max")]
    result = search(SPACE, toy_evaluate, objectives, algorithm="nsga3", max_evals=50, seed=0,
                    progress=False)
    best = max(r.values["accuracy_proxy"] for r in result.history if r.ok)
    assert any(r.values["accuracy_proxy"] == best for r in result.front)


def test_threads_backend_evaluates_each_config_once():
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="nsga2", max_evals=50, workers=4,
                    seed=0, progress=False)
    assert len(result.history) == 50 == len({r.key for r in result.history})


def test_same_seed_same_history():
    runs = [search(SPACE, toy_evaluate, OBJECTIVES, algorithm="deap-nsga2", max_evals=40, seed=7,
                   progress=False) for _ in range(2)]
    assert [r.key for r in runs[0].history] == [r.key for r in runs[1].history]


@pytest.mark.parametrize("kwargs, message", [
    ({"algorithm": "nsga4"}, "unknown algorithm 'nsga4'"),
    ({"algorithm": "nsga2", "algorithm_options": {"popsize": 3}}, "no option"),
    ({"max_evals": 0}, "max_evals must be a positive int"),
    ({"max_evals": True}, "max_evals must be a positive int"),
    ({"seed": -1}, "seed"),
    ({"objectives": [Objective("error"), Objective("error")]}, "unique"),
    ({"objectives": []}, "at least one objective"),
    ({"backend": "slurm"}, "unknown backend"),
    ({"workers": 0}, "workers"),
    ({"reference": {"error": (0, 1)}}, "misses objective"),
])
def test_bad_arguments_raise_config_error(kwargs, message):
    args = {"objectives": OBJECTIVES, **kwargs}
    with pytest.raises(ConfigError, match=message):
        search(SPACE, toy_evaluate, progress=False, **args)


def test_objective_direction_is_checked():
    with pytest.raises(ConfigError, match="direction"):
        Objective("error", "minimise")


def test_equivalent_configs_are_evaluated_once():
    # depth 0 makes width irrelevant: all (0, w) are one network
    def canonical(config):
        return {"depth": 0, "width": 8} if config["depth"] == 0 else config

    space = SearchSpace({"depth": IntRange(0, 3), "width": Choice([8, 16, 32, 64])},
                        canonicalize=canonical)
    calls = []

    def evaluate(config):
        calls.append(space.canonical_key(config))
        return {"error": 1 / (1 + config["depth"] * config["width"]),
                "cost": config["depth"] * config["width"]}

    result = search(space, evaluate, [Objective("error"), Objective("cost")], algorithm="random",
                    max_evals=100, progress=False)
    assert len(calls) == len(set(calls)) == len(result.history) == 1 + 3 * 4
    assert "no new configuration" in result.stop_reason
