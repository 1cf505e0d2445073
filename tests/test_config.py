"""Run configs: valid files load; each kind of mistake is one ConfigError line naming its key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybridmoo import Choice, ConfigError, Constraint, Objective, SearchSpace
from hybridmoo.config import RunConfig, load_run_config
from hybridmoo.proposers import DEFAULT_ALGORITHM

EVAL_MODULE = """
def evaluate(config):
    return {"error": 0.1 * config["depth"], "size": float(config["depth"]), "lat": 1.0}

NOT_CALLABLE = 3
"""

SPACE_MODULE = """
from hybridmoo import Choice, IntRange, Objective, SearchSpace
from hybridmoo.problems import Problem

SPACE = SearchSpace({"op": Choice(["a", "b"]), "depth": IntRange(1, 3)})
DIMS = {"op": {"choice": ["a", "b"]}}

def evaluate(config):
    return {"loss": float(config["depth"])}

PROBLEM = Problem(SPACE, evaluate, (Objective("loss"),), "a tiny problem")
"""

INLINE = {"op": {"choice": ["a", "b"]}, "depth": {"int_range": [1, 4]}}
OBJS = [{"name": "error", "direction": "min"}, {"name": "size", "unit": "MB"}]


@pytest.fixture
def tmp_modules(tmp_path: Path) -> Path:
    """A directory holding evaluate and space modules with names unique to this test."""
    (tmp_path / "cfg_eval_mod.py").write_text(EVAL_MODULE)
    (tmp_path / "cfg_space_mod.py").write_text(SPACE_MODULE)
    yield tmp_path
    for name in ("cfg_eval_mod", "cfg_space_mod"):
        sys.modules.pop(name, None)


def custom(**changes):
    data = {"space": INLINE, "evaluate": "cfg_eval_mod:evaluate", "objectives": OBJS}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not DROP}


DROP = object()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- valid configs -------------------------------------------------------------------------


def test_registered_problem_brings_space_evaluate_and_objectives():
    cfg = RunConfig.from_dict({"space": "nas-bench-graph"})
    assert cfg.problem == "nas-bench-graph"
    assert cfg.space.names == ("link", "op0", "op1", "op2", "op3")
    assert [o.name for o in cfg.objectives] == ["error", "latency"]
    assert cfg.objectives[1].unit == "s"
    assert callable(cfg.evaluate)
    assert (cfg.algorithm, cfg.max_evals, cfg.seed, cfg.backend, cfg.workers) == (
        DEFAULT_ALGORITHM, 100, 0, "local", 1)
    assert cfg.run_dir is None and cfg.reference is None and cfg.constraints == ()


def test_problem_options_and_objective_names_pick_among_the_problems():
    cfg = RunConfig.from_dict({
        "space": "nas-bench-graph",
        "problem_options": {"dataset": "citeseer", "objectives": ["error", "latency", "params"]},
        "objectives": ["params", "error"],
    })
    assert [(o.name, o.unit) for o in cfg.objectives] == [("params", "M"), ("error", "")]
    assert cfg.evaluate.dataset == "citeseer"
    # a mapping for a problem objective keeps the problem's unit unless it gives its own
    cfg = RunConfig.from_dict({"space": "nas-bench-graph",
                               "objectives": [{"name": "latency"}, {"name": "valid_error"}]})
    assert cfg.objectives == (Objective("latency", "min", "s"), Objective("valid_error"))


def test_inline_space_with_user_evaluate(tmp_modules: Path):
    cfg = RunConfig.from_dict(custom(constraints=[{"name": "lat", "max": 2}],
                                     reference={"error": [0, 1], "size": [0.0, 10.0]},
                                     algorithm="nsga2", algorithm_options={"pop_size": 8},
                                     max_evals=7, seed=3, workers=2),
                              base_dir=tmp_modules)
    assert cfg.space == SearchSpace(INLINE)
    assert cfg.evaluate({"op": "a", "depth": 2})["error"] == pytest.approx(0.2)
    assert cfg.objectives == (Objective("error", "min"), Objective("size", "min", "MB"))
    assert cfg.constraints == (Constraint("lat", max=2.0),)
    assert cfg.reference == {"error": (0.0, 1.0), "size": (0.0, 10.0)}
    kwargs = cfg.search_kwargs()
    assert kwargs["algorithm_options"] == {"pop_size": 8}
    assert (kwargs["max_evals"], kwargs["seed"], kwargs["workers"]) == (7, 3, 2)


def test_list_is_short_for_choice(tmp_modules: Path):
    cfg = RunConfig.from_dict(custom(space={"op": ["a", "b"], "depth": [1, 2]}),
                              base_dir=tmp_modules)
    assert cfg.space.dims["op"] == Choice(["a", "b"])


def test_module_attribute_space_and_problem(tmp_modules: Path):
    cfg = RunConfig.from_dict(custom(space="cfg_space_mod:SPACE"), base_dir=tmp_modules)
    assert cfg.space.names == ("op", "depth")
    cfg = RunConfig.from_dict(custom(space="cfg_space_mod:DIMS"), base_dir=tmp_modules)
    assert cfg.space.names == ("op",)
    cfg = RunConfig.from_dict({"space": "cfg_space_mod:PROBLEM"}, base_dir=tmp_modules)
    assert cfg.objectives == (Objective("loss"),)
    assert cfg.evaluate({"op": "a", "depth": 3}) == {"loss": 3.0}
    assert cfg.problem == "cfg_space_mod:PROBLEM"


def test_yaml_file_paths_are_relative_to_the_file(tmp_path: Path, monkeypatch):
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "cfg_eval_rel.py").write_text(EVAL_MODULE)
    path = write(sub / "run.yaml", """\
        space: {op: {choice: [a, b]}, depth: {int_range: [1, 4]}}
        evaluate: cfg_eval_rel:evaluate   # found next to this file
        objectives: [{name: error}]
        run_dir: runs/here
    """)
    monkeypatch.chdir(tmp_path)
    sys_path = list(sys.path)
    try:
        cfg = load_run_config(path)
        assert cfg.run_dir == sub / "runs" / "here"
        assert cfg.evaluate({"op": "a", "depth": 1})["error"] == pytest.approx(0.1)
        assert sys.path == sys_path  # the directory was on sys.path only while resolving
        assert cfg.source == str(path)
        # overrides (command-line flags) win; their run_dir is relative to the working dir
        cfg = load_run_config(path, {"max_evals": 5, "run_dir": "elsewhere", "seed": None})
        assert cfg.max_evals == 5 and cfg.seed == 0
        assert cfg.run_dir == tmp_path / "elsewhere"
    finally:
        sys.modules.pop("cfg_eval_rel", None)


def test_each_yaml_gets_its_own_module_of_the_same_name(tmp_path: Path):
    results = []
    for i in (1, 2):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "cfg_same_name.py").write_text(f"def evaluate(c):\n    return {{'error': {i}.0}}\n")
        path = write(d / "run.yaml", """\
            space: {x: [1, 2]}
            evaluate: cfg_same_name:evaluate
            objectives: [{name: error}]
        """)
        results.append(load_run_config(path).evaluate({"x": 1})["error"])
    sys.modules.pop("cfg_same_name", None)
    assert results == [1.0, 2.0]


def test_example_configs_load():
    root = Path(__file__).resolve().parents[1] / "examples"
    nb = load_run_config(root / "nas_bench_graph.yaml")
    assert nb.problem == "nas-bench-graph" and nb.max_evals == 100
    assert nb.run_dir == root / "runs" / "nasbench"
    assert set(nb.reference) == {"error", "latency"}
    cs = load_run_config(root / "custom_space.yaml")
    assert cs.constraints and cs.space.size == 5 * 6 * 3 * 3
    result = cs.evaluate(cs.space.sample(__import__("numpy").random.default_rng(0)))
    assert {"error", "params", "latency_ms"} <= set(result)
    sys.modules.pop("custom_problem", None)


# -- mistakes: one ConfigError naming the key ----------------------------------------------

BAD = [
    ("unknown key", custom(max_eval=3), "unknown key 'max_eval' (did you mean 'max_evals'?)"),
    ("bool max_evals", custom(max_evals=True), "max_evals must be an int, got True"),
    ("float max_evals", custom(max_evals=2.5), "max_evals must be an int"),
    ("zero max_evals", custom(max_evals=0), "max_evals must be a positive int, got 0"),
    ("negative seed", custom(seed=-1), "seed must be an int >= 0"),
    ("str seed", custom(seed="1"), "seed must be an int"),
    ("zero workers", custom(workers=0), "workers must be a positive int"),
    ("unknown backend", custom(backend="ray2"), "backend: unknown backend 'ray2'"),
    ("unknown algorithm", custom(algorithm="nsga"), "algorithm: unknown algorithm 'nsga'"),
    ("algorithm type", custom(algorithm=3), "algorithm must be a non-empty string"),
    ("algorithm_options type", custom(algorithm_options=[1]), "algorithm_options must be a"),
    ("missing space", custom(space=DROP), "missing required key 'space'"),
    ("empty space", custom(space={}), "space: the search space is empty"),
    ("bad dimension", custom(space={"a": {"choice": []}}), "space: Choice needs at least one"),
    ("bad dim kind", custom(space={"a": {"range": [1, 2]}}), "space: dimension 'a'"),
    ("space type", custom(space=3), "space must be a problem name"),
    ("unknown problem", {"space": "nas-bench-grap"},
     "space: unknown problem 'nas-bench-grap' (did you mean 'nas-bench-graph'?)"),
    ("unknown problem option", {"space": "nas-bench-graph", "problem_options": {"datset": "x"}},
     "problem_options: problem 'nas-bench-graph' has no option 'datset'"),
    ("unknown dataset", {"space": "nas-bench-graph", "problem_options": {"dataset": "x"}},
     "problem_options: nas-bench-graph has no dataset 'x'; available: arxiv"),
    ("options without problem", custom(problem_options={"a": 1}), "problem_options only go"),
    ("module not found", custom(evaluate="no_such_mod_xyz:evaluate"),
     "evaluate: cannot import module 'no_such_mod_xyz'"),
    ("attribute not found", custom(evaluate="cfg_eval_mod:evaluat"),
     "evaluate: module 'cfg_eval_mod' has no attribute 'evaluat' (did you mean 'evaluate'?)"),
    ("not callable", custom(evaluate="cfg_eval_mod:NOT_CALLABLE"),
     "evaluate: 'cfg_eval_mod:NOT_CALLABLE' is 3 (int), not a function"),
    ("no colon", custom(space="cfg_space_mod:"), "space: must be 'module:attribute'"),
    ("space of wrong kind", custom(space="cfg_eval_mod:NOT_CALLABLE"),
     "space: 'cfg_eval_mod:NOT_CALLABLE' is 3 (int), expected"),
    ("missing evaluate", custom(evaluate=DROP), "missing required key 'evaluate'"),
    ("missing objectives", custom(objectives=DROP), "missing required key 'objectives'"),
    ("empty objectives", custom(objectives=[]), "objectives must be a non-empty list"),
    ("bare name without problem", custom(objectives=["error"]), "objectives[0]: a bare name"),
    ("unknown problem objective", {"space": "nas-bench-graph", "objectives": ["eror"]},
     "objectives[0]: the problem has no objective 'eror' (did you mean 'error'?)"),
    ("bad direction", custom(objectives=[{"name": "error", "direction": "down"}]),
     "objectives[0].direction must be 'min' or 'max'"),
    ("objective key typo", custom(objectives=[{"name": "error", "dir": "min"}]),
     "objectives[0]: unknown key 'dir'"),
    ("objective without name", custom(objectives=[{"direction": "min"}]),
     "objectives[0].name must be a non-empty string"),
    ("unit type", custom(objectives=[{"name": "error", "unit": 1}]), "objectives[0].unit"),
    ("duplicate objectives", custom(objectives=[{"name": "error"}, {"name": "error"}]),
     "objectives: names must be unique"),
    ("constraints type", custom(constraints={"name": "lat"}), "constraints must be a list"),
    ("constraint bound bool", custom(constraints=[{"name": "lat", "max": True}]),
     "constraints[0].max must be a number, got True"),
    ("constraint key typo", custom(constraints=[{"name": "lat", "maximum": 1}]),
     "constraints[0]: unknown key 'maximum'"),
    ("run_dir type", custom(run_dir=5), "run_dir must be a path"),
    ("reference unknown objective", custom(reference={"eror": [0, 1], "size": [0, 1]}),
     "reference: 'eror' is not an objective"),
    ("reference incomplete", custom(reference={"error": [0, 1]}),
     "reference misses objective(s) size"),
    ("reference pair", custom(reference={"error": [0, 1, 2], "size": [0, 1]}),
     "reference.error must be [best, worst]"),
    ("not a mapping", ["space"], "expected a mapping of keys"),
]


@pytest.mark.parametrize(("data", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_config_is_one_line_naming_the_key(tmp_modules: Path, data, message):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data, base_dir=tmp_modules, source="run.yaml")
    text = str(info.value)
    assert text.startswith("run.yaml: ")
    assert message in text
    assert "\n" not in text


YAML_BAD = [
    ("invalid yaml", "space: [1\n", "run.yaml: invalid YAML: "),
    ("duplicate key", "space: a\nspace: b\n", "key 'space' is given twice at line 2"),
    ("empty file", "# nothing\n", "run.yaml: the file is empty"),
    ("list at top", "- space\n", "expected a mapping of keys"),
    ("exponent without dot", "space: nas-bench-graph\nconstraints: [{name: latency, max: 1e-3}]\n",
     "constraints[0].max must be a number, got '1e-3' (str) (YAML reads numbers like 1e-3"),
]


@pytest.mark.parametrize(("text", "message"), [case[1:] for case in YAML_BAD],
                         ids=[case[0] for case in YAML_BAD])
def test_bad_yaml_file(tmp_path: Path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("run.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_run_config("run.yaml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_run_config(tmp_path / "nope.yaml")


def test_broken_user_module_is_one_line(tmp_path: Path):
    (tmp_path / "cfg_broken_mod.py").write_text("def evaluate(:\n")
    (tmp_path / "cfg_raising_mod.py").write_text("raise RuntimeError('boom')\n")
    for module, expected in (("cfg_broken_mod", "SyntaxError"), ("cfg_raising_mod", "boom")):
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict(custom(evaluate=f"{module}:evaluate"), base_dir=tmp_path)
        assert f"evaluate: importing module {module!r} failed" in str(info.value)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_importing_config_and_cli_imports_no_heavy_library():
    code = ("import sys, hybridmoo.config, hybridmoo.cli; "
            "heavy = ['pymoo', 'optuna', 'sklearn', 'torch', 'ray', 'deap', 'nas_bench_graph', "
            "'yaml', 'rich']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_algorithm_override_drops_the_other_engines_options(tmp_path: Path):
    path = write(tmp_path / "run.yaml", """\
        space: nas-bench-graph
        algorithm: nsga2
        algorithm_options: {pop_size: 8}
    """)
    assert load_run_config(path, {"algorithm": "nsga2"}).algorithm_options == {"pop_size": 8}
    cfg = load_run_config(path, {"algorithm": "random"})
    assert (cfg.algorithm, cfg.algorithm_options) == ("random", {})


def test_from_dict_accepts_python_objects():
    space = SearchSpace({"x": Choice([1, 2])})
    cfg = RunConfig.from_dict({"space": space, "evaluate": lambda c: {"e": c["x"]},
                               "objectives": [Objective("e", "max")],
                               "constraints": [Constraint("e", max=2)], "algorithm": "random"})
    assert cfg.space is space and cfg.objectives == (Objective("e", "max"),)
    assert cfg.constraints == (Constraint("e", max=2),)
    result = cfg.run(progress=False)
    assert len(result.history) == 2 and result.front[0].values == {"e": 2.0}
