"""Crash and resume: real SIGKILLs of a search (and of supernet training) run in a child process.

The search child (``crash_job.py``) kills itself at an exact point (when evaluation N+1 starts,
or in the middle of writing journal line N+1); a resumed child must then produce the history
(configs, values, order, failures) and the front of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybridmoo.journal import JOURNAL_FILE, LOCK_FILE, RUN_FILE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
JOB = HERE / "crash_job.py"
ENGINES = ("nsga2", "surrogate")
# journal lines written when the child dies (of 40): the default run takes the first, one
# in the middle and the last but few; -m slow the rest
KILL_POINTS = [pytest.param(n, marks=[pytest.mark.slow] if n in (1, 15, 23) else [])
               for n in (0, 1, 7, 15, 23, 31)]
TEAR_POINTS = (1, 22)


def child_env(**extra: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRASH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_job(run_dir: Path, algorithm: str, out: Path, *, resume: bool = False,
            **faults: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(JOB), str(run_dir), algorithm, str(out)]
    return subprocess.run(argv + (["--resume"] if resume else []), capture_output=True,
                          text=True, timeout=120, env=child_env(**faults))


def lines(run_dir: Path) -> int:
    journal = run_dir / JOURNAL_FILE
    return len(journal.read_bytes().splitlines()) if journal.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    """History and front of one uninterrupted child run per engine."""
    results = {}
    for algorithm in ENGINES:
        base = tmp_path_factory.mktemp(f"whole-{algorithm}")
        done = run_job(base / "run", algorithm, base / "out.json")
        assert done.returncode == 0, done.stderr
        results[algorithm] = json.loads((base / "out.json").read_text())
        assert len(results[algorithm]["history"]) == 40
        assert any(not r["ok"] for r in results[algorithm]["history"])  # failures replay too
    return results


@pytest.mark.parametrize("algorithm", ENGINES)
@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted, algorithm,
                                                        kill_after):
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    killed = run_job(run_dir, algorithm, out, CRASH_KILL_AFTER=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    assert (run_dir / RUN_FILE).is_file() and lines(run_dir) == kill_after
    resumed = run_job(run_dir, algorithm, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads(out.read_text())
    assert got["history"] == uninterrupted[algorithm]["history"]
    assert got["front"] == uninterrupted[algorithm]["front"]
    assert got["warnings"] == []
    assert lines(run_dir) == 40


@pytest.mark.parametrize("tear_after", TEAR_POINTS)
def test_a_kill_mid_line_is_tolerated_and_reported(tmp_path, uninterrupted, tear_after):
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    killed = run_job(run_dir, "nsga2", out, CRASH_TEAR_AFTER=tear_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    raw = (run_dir / JOURNAL_FILE).read_bytes()
    assert raw.count(b"\n") == tear_after and not raw.endswith(b"\n")  # a torn last line
    resumed = run_job(run_dir, "nsga2", out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "dropped a truncated last line" in resumed.stderr  # the warning reaches the user
    got = json.loads(out.read_text())
    assert len(got["warnings"]) == 1 and "truncated last line" in got["warnings"][0]
    assert got["history"] == uninterrupted["nsga2"]["history"]
    assert got["front"] == uninterrupted["nsga2"]["front"]
    assert (run_dir / JOURNAL_FILE).read_bytes().count(b"\n") == lines(run_dir) == 40


def test_a_torn_line_through_the_cli_is_a_one_line_warning(tmp_path):
    """The command line reports the dropped line (stdout ``warning:``), then finishes the run."""
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    killed = run_job(run_dir, "random", out, CRASH_TEAR_AFTER=5)
    assert killed.returncode == -signal.SIGKILL
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""\
        space: hybridmoo.testing.proposers:SPACE
        evaluate: hybridmoo.testing.proposers:toy_evaluate
        objectives: [{{name: error}}, {{name: cost}}]
        algorithm: random
        max_evals: 40
        seed: 3
        run_dir: {run_dir}
    """))
    done = subprocess.run([sys.executable, "-m", "hybridmoo", "search", "-c", str(config),
                           "--resume", "-q"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "warning: " in done.stdout and "truncated last line" in done.stdout
    assert lines(run_dir) == 40


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    holder = subprocess.Popen([sys.executable, str(JOB), str(run_dir), "nsga2", str(out)],
                              env=child_env(CRASH_HOLD_AFTER=4), stderr=subprocess.PIPE)
    try:
        ready = Path(f"{run_dir}.ready")
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        before = (run_dir / JOURNAL_FILE).read_bytes()
        config = tmp_path / "run.yaml"
        config.write_text(textwrap.dedent(f"""\
            space: hybridmoo.testing.proposers:SPACE
            evaluate: hybridmoo.testing.proposers:toy_evaluate
            objectives: [{{name: error}}, {{name: cost}}]
            algorithm: nsga2
            algorithm_options: {{pop_size: 8}}
            max_evals: 40
            seed: 3
            run_dir: {run_dir}
        """))
        for extra in ([], ["--resume"]):
            second = subprocess.run([sys.executable, "-m", "hybridmoo", "search", "-c",
                                     str(config), "-q", *extra], capture_output=True, text=True,
                                    timeout=120, env=child_env())
            assert second.returncode == 2
            assert second.stderr == (f"hybridmoo: error: run directory {run_dir} is in use by "
                                     "another hybridmoo process\n")
            assert (run_dir / JOURNAL_FILE).read_bytes() == before  # nothing touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died holding the lock: the lock file stays but the OS released the lock
    assert (run_dir / LOCK_FILE).exists()
    resumed = run_job(run_dir, "nsga2", out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert lines(run_dir) == 40
