"""The command line: in-process ``main([...])`` plus real ``python -m hybridmoo`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybridmoo.cli import main
from hybridmoo.journal import JOURNAL_FILE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

NASBENCH = """\
space: nas-bench-graph
algorithm: {algorithm}
max_evals: {max_evals}
seed: 0
run_dir: run
"""

WRONG_KEY_EVAL = """
def evaluate(config):
    return {"err": 0.5, "size": 1.0}   # the config asks for "error"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def nasbench_config(tmp_path: Path, algorithm: str = "nsga2", max_evals: int = 30) -> Path:
    return write(tmp_path / "run.yaml", NASBENCH.format(algorithm=algorithm, max_evals=max_evals))


def assert_one_line_error(capsys, rc: int) -> str:
    out = capsys.readouterr()
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("hybridmoo: error: ")
    assert "Traceback" not in out.err + out.out
    return lines[0]


# -- help, tables --------------------------------------------------------------------------


def test_help_answers_in_a_subprocess_under_one_second():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    times = []
    for _ in range(3):  # the best of three: a busy machine must not fail the test
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "hybridmoo", "--help"], capture_output=True,
                             text=True, env=env, timeout=30)
        times.append(time.perf_counter() - start)
        assert out.returncode == 0, out.stderr
        assert "usage: hybridmoo" in out.stdout and "search" in out.stdout
        if times[-1] < 1.0:
            break
    assert min(times) < 1.0, times


def test_search_help(capsys):
    assert main(["search", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--resume", "--algorithm", "--max-evals", "--seed", "--run-dir",
                 "--backend", "--workers", "--quiet"):
        assert flag in out


def test_algorithms_and_problems_tables(capsys):
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    assert "nsga2" in out and "pymoo" in out and "(default)" in out
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    assert "nas-bench-graph" in out and "digits-mlp" in out and "dataset='cora'" in out
    assert "hybridmoo[bench]" in out  # not eaten as rich markup


@pytest.mark.parametrize("argv", [[], ["search"], ["nope"], ["search", "-c", "x", "--seed", "-1"],
                                  ["search", "-c", "x", "--max-evals", "0"],
                                  ["search", "-c", "x", "--backend", "mars"]])
def test_usage_errors_exit_2(capsys, argv):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


# -- a real search -------------------------------------------------------------------------


def test_search_nas_bench_graph_writes_the_journal_and_prints_the_front(tmp_path, capsys):
    config = nasbench_config(tmp_path)
    assert main(["search", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    journal = tmp_path / "run" / JOURNAL_FILE
    assert len(journal.read_text().splitlines()) == 30
    assert "Pareto front:" in out and "of 30 evaluated" in out
    assert "error ↓" in out and "latency [s] ↓" in out and "op0" in out
    assert "hypervolume: " in out
    assert "stopped: max_evals=30 reached" in out
    assert f"journal: {journal}" in out

    # the same run again without --resume: refused; with --resume and more budget: continues
    assert_one_line_error(capsys, main(["search", "--config", str(config)]))
    assert main(["search", "-c", str(config), "--resume", "--max-evals", "40", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert len(journal.read_text().splitlines()) == 40
    assert "Pareto front" not in out and "stopped: max_evals=40 reached" in out


def test_flags_override_the_config(tmp_path, monkeypatch, capsys):
    config = nasbench_config(tmp_path, algorithm="nsga", max_evals=1000)  # both overridden
    monkeypatch.chdir(tmp_path)
    rc = main(["search", "-c", str(config), "--algorithm", "random", "--max-evals", "12",
               "--seed", "4", "--run-dir", "flagged", "--workers", "2", "--backend", "local"])
    assert rc == 0, capsys.readouterr().err
    assert len((tmp_path / "flagged" / JOURNAL_FILE).read_text().splitlines()) == 12
    assert "with random: max_evals=12, seed=4" in capsys.readouterr().out


def test_custom_example_finds_its_module_from_another_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(["search", "-c", str(EXAMPLES / "custom_space.yaml"), "--run-dir", "out",
                   "--max-evals", "20", "--algorithm", "random"])
    finally:
        sys.modules.pop("custom_problem", None)
    assert rc == 0, capsys.readouterr().err
    assert len((tmp_path / "out" / JOURNAL_FILE).read_text().splitlines()) == 20
    assert "params [count] ↓" in capsys.readouterr().out


@pytest.mark.slow  # about 40 s: a real supernet, search, refinement, ONNX export
def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    argv = ["demo", "--out", str(out_dir), "--steps", "6", "--max-evals", "4",
            "--algorithm", "random"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Pareto front:" in out and "accuracy [%] ↑" in out and "report:" in out
    journal = [json.loads(line) for line in (out_dir / JOURNAL_FILE).read_text().splitlines()]
    origins = [r["candidate"]["origin"] for r in journal]
    assert origins.count("random") == 4 and "refine" in origins  # the final refinement round
    front = json.loads((out_dir / "export" / "front.json").read_text())
    assert front["points"] and (out_dir / "report" / "report.html").is_file()
    # out exists now: a fresh timestamped directory inside it, the first run stays untouched
    assert main([*argv, "--quiet"]) == 0
    runs = [p for p in out_dir.iterdir() if p.is_dir() and (p / JOURNAL_FILE).is_file()]
    assert len(runs) == 1
    assert len((out_dir / JOURNAL_FILE).read_text().splitlines()) == len(journal)


@pytest.mark.parametrize("started", [True, False])
def test_keyboard_interrupt_exits_130_with_a_true_resume_hint(tmp_path, capsys, monkeypatch,
                                                               started):
    from hybridmoo.config import RunConfig
    from hybridmoo.journal import RUN_FILE

    def interrupted(self, **kwargs):
        if started:  # the search wrote what a resume needs before the interrupt
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / RUN_FILE).write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(RunConfig, "run", interrupted)
    assert main(["search", "-c", str(nasbench_config(tmp_path))]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert ("--resume" in err) is started
    assert started or "nothing was written to resume" in err


# -- errors: one line, exit 2, no traceback ------------------------------------------------

ERRORS = [
    ("unknown algorithm", "space: nas-bench-graph\nalgorithm: nsga\n",
     "unknown algorithm 'nsga' (did you mean"),
    ("unknown key", "space: nas-bench-graph\nmax_eval: 3\n",
     "unknown key 'max_eval' (did you mean 'max_evals'?)"),
    ("wrong type", "space: nas-bench-graph\nmax_evals: yes\n", "max_evals must be an int"),
    ("empty space", "space: {}\nevaluate: m:f\nobjectives: [{name: e}]\n",
     "space: the search space is empty"),
    ("bad yaml", "space: [1\n", "invalid YAML"),
    ("unknown problem option", "space: nas-bench-graph\nproblem_options: {dataset: mnist}\n",
     "nas-bench-graph has no dataset 'mnist'"),
    ("bad algorithm option", "space: nas-bench-graph\nalgorithm: nsga2\n"
     "algorithm_options: {popsize: 3}\nmax_evals: 5\n", "has no option 'popsize'"),
    ("resume without run_dir", "space: nas-bench-graph\n", "--resume needs a run directory"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, text, message):
    config = write(tmp_path / "run.yaml", text)
    argv = ["search", "--config", str(config)]
    if "resume" in message:
        argv.append("--resume")
    line = assert_one_line_error(capsys, main(argv))
    assert message in line


def test_missing_config_file(tmp_path, capsys):
    line = assert_one_line_error(capsys, main(["search", "-c", str(tmp_path / "nope.yaml")]))
    assert "nope.yaml: no such config file" in line


def test_objective_not_returned_by_evaluate_exits_2(tmp_path, capsys):
    (tmp_path / "cli_wrong_key_eval.py").write_text(WRONG_KEY_EVAL)
    config = write(tmp_path / "run.yaml", """\
        space: {width: {choice: [8, 16]}, depth: {int_range: [1, 3]}}
        evaluate: cli_wrong_key_eval:evaluate
        objectives: [{name: error}, {name: size}]
        algorithm: random
        max_evals: 5
        run_dir: run
    """)
    try:
        line = assert_one_line_error(capsys, main(["search", "-c", str(config)]))
    finally:
        sys.modules.pop("cli_wrong_key_eval", None)
    assert "evaluate did not return objective 'error'" in line
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()  # a setup error leaves no run behind


def test_error_in_a_real_subprocess(tmp_path):
    config = write(tmp_path / "run.yaml", "space: nas-bench-graph\nmax_eval: 3\n")
    out = subprocess.run([sys.executable, "-m", "hybridmoo", "search", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == (f"hybridmoo: error: {config}: unknown key 'max_eval' (did you mean "
                          "'max_evals'?); valid keys: space, problem_options, evaluate, "
                          "objectives, constraints, algorithm, algorithm_options, max_evals, "
                          "seed, run_dir, backend, workers, reference, ray\n")


def test_resume_with_a_larger_budget_after_a_long_journal(tmp_path, capsys):
    # replaying more than 100 journaled configs must not count as "the proposer is stuck"
    config = nasbench_config(tmp_path, algorithm="random", max_evals=110)
    assert main(["search", "-c", str(config), "-q"]) == 0
    assert main(["search", "-c", str(config), "-q", "--resume", "--max-evals", "125"]) == 0
    assert "stopped: max_evals=125 reached" in capsys.readouterr().out
    assert len((tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()) == 125


def test_front_table_shares_one_row_between_equal_values():
    import io

    from rich.console import Console

    from hybridmoo import Candidate, EvalResult, Objective, ParetoArchive
    from hybridmoo.cli_output import print_front as _report
    from hybridmoo.objectives import ranked
    from hybridmoo.search import SearchResult

    objectives = (Objective("error"), Objective("size", unit="MB"))
    archive = ParetoArchive(objectives)
    for i, (e, s) in enumerate([(0.1, 2.0), (0.2, 1.0), (0.1, 2.0), (0.3, 3.0), (0.1, 2.0)]):
        archive.add(EvalResult(Candidate({"x": i}), {"error": e, "size": s}))
    archive.add(EvalResult(Candidate({"x": 9}), ok=False, reason="ValueError: nope"))
    buffer = io.StringIO()
    _report(Console(file=buffer, width=120, markup=False), SearchResult(archive, "done"),
            objectives, ["x"], quiet=False)
    text = buffer.getvalue()
    assert "Pareto front: 4 points of 6 evaluated, 2 distinct" in text
    assert "+2" in text and "size [MB] ↓" in text
    # the rank (best error first), as the export numbers its folders, and the key
    first = ranked(archive.front, objectives)[0]
    assert f"│ 00 │ {first.key[:8]} │" in text
    refined = EvalResult(Candidate({"x": 0}, origin="refine", parents=(first.key,)),
                         {"error": 0.05, "size": 2.0})
    archive.add(refined)
    buffer = io.StringIO()
    _report(Console(file=buffer, width=120, markup=False), SearchResult(archive, "done"),
            objectives, ["x"], quiet=False)
    assert "6 evaluated + 1 refined, failed: 1" in buffer.getvalue()
    assert "failed: 1 (e.g. ValueError: nope)" in text and "journal: none" in text
