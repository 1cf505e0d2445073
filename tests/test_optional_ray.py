"""Ray is an optional extra (``pip install "hybridmoo[ray]"``): everything but the Ray features
imports and runs without it, and asking for a Ray feature without it is one line naming the
extra. Each check runs in a child process in which ``import ray`` fails (``sys.modules["ray"]
= None``, set before hybridmoo is imported), whether or not Ray is installed here."""

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hybridmoo.backends.ray_cluster import require_ray
from hybridmoo.errors import HybridMooError, MissingExtraError

ROOT = Path(__file__).parents[1]
NO_RAY = "import sys; sys.modules['ray'] = None\n"  # every `import ray` now raises ImportError
MESSAGE = 'Ray is not installed: pip install "hybridmoo[ray]"'


def _python(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python without Ray; ``args`` become its ``sys.argv[1:]``."""
    return subprocess.run([sys.executable, "-c", NO_RAY + textwrap.dedent(code), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m hybridmoo ARGS`` without Ray."""
    return _python("import runpy; runpy.run_module('hybridmoo', run_name='__main__')", *args,
                   cwd=cwd)


def _black_box_config(folder: Path, **extra: str) -> Path:
    """A tiny inline search (6 evaluations of a 1-dim space, a few ms each) in ``folder``."""
    (folder / "tiny_problem.py").write_text(
        "def evaluate(config):\n"
        "    return {'a': float(config['x']), 'b': float(10 - config['x'])}\n")
    lines = ["space: {x: {int_range: [0, 10]}}", "evaluate: tiny_problem:evaluate",
             "objectives: [{name: a, direction: min}, {name: b, direction: min}]",
             "algorithm: random", "max_evals: 6", "run_dir: run",
             *(f"{key}: {value}" for key, value in extra.items())]
    path = folder / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hybridmoo: error: ") and lines[0].endswith(MESSAGE), lines[0]


# -- in this process -----------------------------------------------------------------------


def test_require_ray_names_the_extra(monkeypatch):
    require_ray("anything")  # Ray is installed in the test environment (the dev extra)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError) as info:
        require_ray("the ray backend")
    assert str(info.value) == f"the ray backend: {MESSAGE}"
    assert isinstance(info.value, HybridMooError) and isinstance(info.value, ImportError)


def test_ray_is_an_extra_not_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [Requirement(r).name for r in project["dependencies"]]
    assert "ray" not in core, "ray must stay out of the core dependencies: use the ray extra"
    extras = project["optional-dependencies"]
    (ray,) = [Requirement(r) for r in extras["ray"]]
    assert ray.name == "ray" and {"default", "train"} <= ray.extras
    in_dev = [Requirement(r) for r in extras["dev"] if Requirement(r).name == "ray"]
    assert [str(r) for r in in_dev] == [str(ray)], "the dev extra must install the ray extra"


# -- child processes without Ray -----------------------------------------------------------


def test_every_module_imports_without_ray():
    proc = _python("""
        import importlib, pkgutil
        import hybridmoo
        names = [m.name for m in pkgutil.walk_packages(hybridmoo.__path__, "hybridmoo.")
                 if m.name != "hybridmoo.__main__"]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 50  # the walk found the package's modules


def test_help_of_every_command_without_ray():
    proc = _python("""
        import argparse, contextlib, io, json
        from hybridmoo.cli import build_parser, main
        (commands,) = [a for a in build_parser()._actions
                       if isinstance(a, argparse._SubParsersAction)]
        codes = {}
        for args in [[], *([name] for name in commands.choices)]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                codes[" ".join(args)] = (main([*args, "--help"]), "usage:" in out.getvalue())
        print(json.dumps(codes))
        """)
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout)
    assert {"", "search", "train-supernet", "export", "report"} <= set(codes)
    assert all(code == [0, True] for code in codes.values()), codes


def test_black_box_search_on_the_local_backend_without_ray(tmp_path):
    proc = _cli("search", "--config", str(_black_box_config(tmp_path)), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "6 evaluated" in proc.stdout
    assert (tmp_path / "run" / "journal.jsonl").is_file()


def test_the_python_api_searches_locally_and_refuses_ray_without_ray():
    proc = _python("""
        from hybridmoo import IntRange, Objective, SearchSpace, search
        from hybridmoo.backends import RayBackend, make_backend
        from hybridmoo.errors import MissingExtraError
        from hybridmoo.supernet.distributed import train_supernet_distributed

        space = SearchSpace({"x": IntRange(0, 10)})
        objectives = [Objective("a", "min"), Objective("b", "min")]
        def evaluate(config):
            return {"a": float(config["x"]), "b": float(10 - config["x"])}
        result = search(space, evaluate, objectives, algorithm="random", max_evals=5)
        print(len(result.history))
        for call in (lambda: RayBackend(2), lambda: make_backend("ray", 2),
                     lambda: search(space, evaluate, objectives, backend="ray"),
                     lambda: train_supernet_distributed({"model": "test_resnet"}, workers=2)):
            try:
                call()
            except MissingExtraError as exc:
                print(exc)
        """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "5"
    assert lines[1:] == [f"the ray backend: {MESSAGE}"] * 3 + [
        f"distributed supernet training (Ray Train): {MESSAGE}"]


@pytest.mark.parametrize("flags", [["--backend", "ray"], ["--ray-address", "auto"]])
def test_search_on_ray_without_ray_is_one_line(tmp_path, flags):
    config = _black_box_config(tmp_path)
    proc = _cli("search", "--config", str(config), *flags)
    _assert_one_line_error(proc)
    assert not (tmp_path / "run").exists()


def test_a_config_naming_backend_ray_fails_before_any_work(tmp_path):
    proc = _cli("search", "--config", str(_black_box_config(tmp_path, backend="ray")))
    _assert_one_line_error(proc)
    assert "run.yaml: backend: ray: " in proc.stderr
    assert proc.stdout == ""  # not even the "searching ..." line
    assert not (tmp_path / "run").exists()


def test_a_pipeline_config_naming_backend_ray_fails_before_any_work(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("supernet: {model: test_resnet, steps: 2}\nmax_evals: 2\n"
                      "run_dir: run\nbackend: ray\n")
    proc = _cli("search", "--config", str(config))
    _assert_one_line_error(proc)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--gpu"], ["--workers", "2"], ["--backend", "ray"]])
def test_distributed_training_without_ray_is_one_line(tmp_path, flags):
    config = tmp_path / "train.yaml"
    config.write_text("model: test_resnet\nsteps: 2\nrun_dir: run\n")
    proc = _cli("train-supernet", "--config", str(config), *flags)
    _assert_one_line_error(proc)
    assert proc.stdout == ""  # refused before the "training a supernet ..." line
    assert not (tmp_path / "run").exists()
