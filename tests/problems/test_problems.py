"""The registry of built-in problems, NAS-Bench-Graph (a table lookup) and the digits MLP demo."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from hybridmoo import ConfigError, Objective, search
from hybridmoo.archive import non_dominated_mask
from hybridmoo.problems import (
    Problem,
    ProblemSpec,
    available_problems,
    make_problem,
    register_problem,
)
from hybridmoo.problems import nas_bench_graph as nbg  # imports nas_bench_graph lazily

pytest.importorskip("nas_bench_graph")

KNOWN = {"link": 8, "op0": "gcn", "op1": "gat", "op2": "gin", "op3": "sage"}  # link [0,1,2,3]
ALL_SKIP = {"link": 0, "op0": "skip", "op1": "skip", "op2": "skip", "op3": "skip"}


# -- registry ------------------------------------------------------------------------------


def test_registry_names_and_lazy_factories():
    names = [spec.name for spec in available_problems()]
    assert names[:2] == ["nas-bench-graph", "digits-mlp"]
    spec = available_problems()[0]
    assert spec.options() == {"dataset": "cora", "objectives": ("error", "latency")}
    with pytest.raises(ValueError, match="already registered"):
        register_problem(ProblemSpec("digits-mlp", "x:y", "duplicate"))


def test_unknown_problem_and_option():
    with pytest.raises(ConfigError, match=r"unknown problem 'digits' \(did you mean 'digits-mlp'"):
        make_problem("digits")
    with pytest.raises(ConfigError, match=r"no option 'datset' \(did you mean 'dataset'\?\)"):
        make_problem("nas-bench-graph", datset="cora")
    with pytest.raises(ConfigError, match="has no option 'dataset'; it takes none"):
        make_problem("digits-mlp", dataset="cora")


def test_problem_record_checks_its_fields():
    space = make_problem("digits-mlp").space
    with pytest.raises(ConfigError, match="SearchSpace"):
        Problem({"a": 1}, print, (Objective("e"),))
    with pytest.raises(ConfigError, match="callable"):
        Problem(space, 3, (Objective("e"),))
    with pytest.raises(ConfigError, match="Objectives"):
        Problem(space, print, ())


# -- nas-bench-graph -----------------------------------------------------------------------


def test_table_loads_once_per_dataset():
    table = nbg.load_table("cora")
    assert len(table) == 26206
    assert nbg.load_table("cora") is table  # cached
    entry = next(iter(table.values()))
    assert set(entry) == {"perf", "latency", "para", "valid_perf"}
    assert all(type(v) is float for v in entry.values())
    assert {"arxiv", "citeseer", "computers", "cora", "cs", "photo", "physics"} <= set(
        nbg.datasets())
    assert "proteins" not in nbg.datasets()  # other op list: not this space


def test_space_and_defaults():
    problem = make_problem("nas-bench-graph")
    assert problem.space.names == ("link", "op0", "op1", "op2", "op3")
    assert problem.space.size == 9 * 9**4
    assert problem.objectives == (Objective("error", "min", ""), Objective("latency", "min", "s"))
    picked = make_problem("nas-bench-graph", objectives=["params", "error"]).objectives
    assert [(o.name, o.unit) for o in picked] == [("params", "M"), ("error", "")]


def test_known_config_values():
    values = make_problem("nas-bench-graph").evaluate(dict(KNOWN))
    assert values == pytest.approx({"error": 1 - 0.779, "latency": 0.004108508427937825,
                                    "params": 0.700167, "valid_error": 1 - 0.8073333333333332})
    other = make_problem("nas-bench-graph", dataset="citeseer").evaluate(dict(KNOWN))
    assert other["error"] != values["error"]


def test_isomorphic_configs_share_one_entry():
    evaluate = make_problem("nas-bench-graph").evaluate
    a = {"link": 0, "op0": "gcn", "op1": "gat", "op2": "gin", "op3": "sage"}  # 4 parallel ops
    b = {"link": 0, "op0": "sage", "op1": "gin", "op2": "gat", "op3": "gcn"}
    assert nbg.arch_key(a) == nbg.arch_key(b)
    assert evaluate(a) == evaluate(b)


def test_invalid_all_skip_config_raises_and_is_a_failed_evaluation():
    problem = make_problem("nas-bench-graph")
    with pytest.raises(KeyError, match="no entry for link=0"):
        problem.evaluate(dict(ALL_SKIP))
    from hybridmoo.objectives import run_evaluation
    from hybridmoo.space import Candidate

    result = run_evaluation(problem.evaluate, Candidate(dict(ALL_SKIP)), problem.objectives)
    assert not result.ok and "KeyError" in result.reason


def test_bad_options():
    with pytest.raises(ConfigError, match="no dataset 'mnist'; available: arxiv, citeseer"):
        make_problem("nas-bench-graph", dataset="mnist")
    with pytest.raises(ConfigError, match="no objective 'acc'"):
        make_problem("nas-bench-graph", objectives=["error", "acc"])
    with pytest.raises(ConfigError, match="non-empty"):
        make_problem("nas-bench-graph", objectives=[])


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nas_bench_graph", None)  # import now fails
    with pytest.raises(ConfigError, match=r"install hybridmoo\[bench\]"):
        nbg.space()


def test_evaluate_pickles():
    evaluate = make_problem("nas-bench-graph", dataset="photo").evaluate
    clone = pickle.loads(pickle.dumps(evaluate))
    assert clone(dict(KNOWN)) == evaluate(dict(KNOWN))


@pytest.mark.parametrize("objectives", [("error", "latency"), ("error", "latency", "params")])
def test_true_front_is_the_exact_front(objectives):
    front = nbg.true_front("cora", objectives)
    assert front.shape[1] == len(objectives) and len(front) >= 2
    assert non_dominated_mask(front).all()
    assert len(np.unique(front, axis=0)) == len(front)
    names = list(objectives)
    F = np.array([[nbg._measures(e)[n] for n in names] for e in nbg.load_table("cora").values()])
    # every table entry is weakly dominated by a front point, and each front point is an entry
    covered = np.zeros(len(F), dtype=bool)
    for f in front:
        covered |= np.all(f <= F + 1e-12, axis=1)
        assert np.any(np.all(np.isclose(F, f), axis=1))
    assert covered.all()
    front[0, 0] = -1.0  # a copy: the cached front is untouched
    assert nbg.true_front("cora", objectives)[0, 0] != -1.0


def test_a_search_on_the_benchmark_finds_part_of_the_true_front():
    """The default engine, 100 evaluations on cora error-vs-latency: its front holds true-front
    points and most of the true front's hypervolume (random search gets about 0.87 of it at 100
    evaluations, the default about 0.97: docs/benchmarks.md)."""
    from hybridmoo.archive import hypervolume

    problem = make_problem("nas-bench-graph")
    result = search(problem.space, problem.evaluate, problem.objectives, max_evals=100, seed=1,
                    progress=False)
    assert len(result.history) == 100
    true = nbg.true_front("cora")
    found = np.array([[r.values["error"], r.values["latency"]] for r in result.front])
    on_true_front = [bool(np.any(np.all(np.isclose(true, f), axis=1))) for f in found]
    assert sum(on_true_front) >= 3, found
    ideal, nadir = true.min(axis=0), true.max(axis=0)
    share = hypervolume(found, ideal, nadir) / hypervolume(true, ideal, nadir)
    assert share >= 0.93


# -- digits-mlp ----------------------------------------------------------------------------


def test_digits_mlp_one_evaluation():
    problem = make_problem("digits-mlp")
    assert [(o.name, o.unit) for o in problem.objectives] == [("error", ""), ("params", "count")]
    assert problem.space.size == 4 * 3 * 2 * 4 * 3
    config = {"hidden": 16, "layers": 1, "activation": "relu", "alpha": 1e-4, "max_iter": 50}
    values = problem.evaluate(dict(config))
    assert 0.0 < values["error"] < 1.0
    assert values["params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert values["error"] < 0.3  # a real classifier, not chance (0.9)
    assert problem.evaluate(dict(config)) == values  # deterministic
    assert pickle.loads(pickle.dumps(problem.evaluate))(dict(config)) == values


def test_digits_split_is_fixed_and_stratified():
    from hybridmoo.problems.digits_mlp import load_split

    X_train, X_test, y_train, y_test = load_split()
    assert len(X_test) == 540 and len(X_train) == 1257
    assert X_train.dtype == np.float32 and X_train.max() <= 1.0
    full = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - 0.3 * full) <= 1)  # stratified
    again = load_split()
    assert again is load_split() and np.array_equal(again[1], X_test)


def test_digits_ctrl_c_inside_fit_is_not_swallowed(monkeypatch):
    import warnings

    from sklearn.neural_network import MLPClassifier

    def interrupted_fit(self, X, y):  # what scikit-learn does when Ctrl-C hits fit
        warnings.warn("Training interrupted by user.", stacklevel=1)
        return self

    monkeypatch.setattr(MLPClassifier, "fit", interrupted_fit)
    config = {"hidden": 16, "layers": 1, "activation": "relu", "alpha": 1e-4, "max_iter": 50}
    with pytest.raises(KeyboardInterrupt):
        make_problem("digits-mlp").evaluate(config)


def test_nas_bench_graph_isomorphic_configs_share_a_canonical_form():
    from hybridmoo.problems.nas_bench_graph import arch_key, canonical_config

    problem = make_problem("nas-bench-graph")
    # link [0, 0, 0, 0]: four parallel layers on the input, so their order does not matter
    a = {"link": 0, "op0": "gcn", "op1": "gat", "op2": "sage", "op3": "gin"}
    b = {"link": 0, "op0": "gin", "op1": "sage", "op2": "gat", "op3": "gcn"}
    assert arch_key(a) == arch_key(b)
    assert problem.space.canonical_key(a) == problem.space.canonical_key(b)
    assert problem.evaluate(a) == problem.evaluate(b)
    canon = canonical_config(a)
    assert problem.space.contains(canon) and arch_key(canon) == arch_key(a)
    c = {"link": 0, "op0": "gcn", "op1": "gcn", "op2": "sage", "op3": "gin"}
    assert problem.space.canonical_key(a) != problem.space.canonical_key(c)


# -- zdt1-grid -------------------------------------------------------------------------------


def test_zdt1_grid_reaches_its_true_front_only_on_the_targets():
    from hybridmoo.problems.synthetic import ZdtGridEvaluate, true_front

    problem = make_problem("zdt1-grid", dims=4, levels=6)
    assert problem.space.size == 6**4
    evaluate = problem.evaluate
    assert isinstance(evaluate, ZdtGridEvaluate)
    targets = evaluate.targets()
    assert len(targets) == 3 and len(set(targets)) == 3  # spread over the grid
    front = true_front(6)
    for x0 in range(6):
        values = evaluate({"x0": x0, **{f"x{i}": t for i, t in enumerate(targets, 1)}})
        np.testing.assert_allclose([values["f1"], values["f2"]], front[x0])
    off = evaluate({"x0": 2, "x1": (targets[0] + 1) % 6, "x2": targets[1], "x3": targets[2]})
    assert off["f2"] > front[2, 1]
    assert pickle.loads(pickle.dumps(evaluate))({"x0": 2, "x1": 0, "x2": 0, "x3": 0}) == \
        evaluate({"x0": 2, "x1": 0, "x2": 0, "x3": 0})


def test_zdt1_grid_bad_options():
    with pytest.raises(ConfigError, match="dims must be an int >= 2"):
        make_problem("zdt1-grid", dims=1)
    with pytest.raises(ConfigError, match="levels must be an int >= 2"):
        make_problem("zdt1-grid", levels=2.5)
