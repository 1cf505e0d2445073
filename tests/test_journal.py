import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hybridmoo import RunDirError, search
from hybridmoo.journal import JOURNAL_FILE, Journal
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate


def run(run_dir, max_evals=40, resume=False, algorithm="nsga2", evaluate=toy_evaluate, seed=3):
    return search(SPACE, evaluate, OBJECTIVES, algorithm=algorithm, max_evals=max_evals,
                  seed=seed, run_dir=run_dir, resume=resume, progress=False)


def keys(result):
    return [r.key for r in result.history]


def test_every_result_is_one_json_line(tmp_path):
    result = run(tmp_path)
    lines = (tmp_path / JOURNAL_FILE).read_text().splitlines()
    assert len(lines) == 40
    assert [json.loads(line)["candidate"]["config"] for line in lines] == [
        r.config for r in result.history]


class Interrupt(BaseException):
    """Stands in for a kill: not an Exception, so evaluate's guard lets it through."""


@pytest.mark.parametrize("algorithm", ["nsga2", "deap-spea2", "optuna-tpe", "random"])
def test_resume_after_interrupt_equals_an_uninterrupted_run(tmp_path, algorithm):
    calls = []

    def dies_after_17(config):
        if len(calls) == 17:
            raise Interrupt
        calls.append(1)
        return toy_evaluate(config)

    with pytest.raises(Interrupt):
        run(tmp_path, algorithm=algorithm, evaluate=dies_after_17)
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) == 17
    resumed = run(tmp_path, resume=True, algorithm=algorithm)
    assert keys(resumed) == keys(run(None, algorithm=algorithm))
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) == 40


def test_resume_with_a_larger_budget_continues(tmp_path):
    run(tmp_path, max_evals=20)
    assert keys(run(tmp_path, max_evals=35, resume=True)) == keys(run(None, max_evals=35))


def test_sigkill_mid_run_then_resume(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from hybridmoo import search
        from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate
        def slow(config):
            time.sleep(0.05)
            return toy_evaluate(config)
        search(SPACE, slow, OBJECTIVES, algorithm="nsga2", max_evals=40, seed=3,
               run_dir={str(tmp_path)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    journal = tmp_path / JOURNAL_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_bytes().splitlines()) >= 12:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(journal.read_bytes().splitlines())
    assert 12 <= done < 40
    assert keys(run(tmp_path, resume=True)) == keys(run(None))


def test_a_truncated_last_line_is_dropped_and_reported(tmp_path):
    run(tmp_path, max_evals=10)
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes()[:-25])  # the crash cut the last line short
    with pytest.warns(UserWarning, match="truncated last line"):
        resumed = run(tmp_path, max_evals=10, resume=True)
    assert any("truncated" in w for w in resumed.warnings)
    assert keys(resumed) == keys(run(None, max_evals=10))
    assert len(journal.read_text().splitlines()) == 10


def test_a_second_process_is_refused(tmp_path):
    with Journal(tmp_path), pytest.raises(RunDirError, match="in use by another"):
        run(tmp_path)


def test_an_existing_run_is_not_overwritten(tmp_path):
    run(tmp_path, max_evals=5)
    with pytest.raises(RunDirError, match="already holds a run"):
        run(tmp_path, max_evals=5)


def test_resume_refuses_changed_settings(tmp_path):
    run(tmp_path, max_evals=5)
    with pytest.raises(RunDirError, match=r"different \['seed'\]"):
        run(tmp_path, max_evals=5, resume=True, seed=4)


def test_resume_of_nothing_is_refused(tmp_path):
    with pytest.raises(RunDirError, match="holds no run"):
        run(tmp_path / "empty", resume=True)


def test_a_corrupt_middle_line_is_an_error(tmp_path):
    run(tmp_path, max_evals=5)
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_text().splitlines()
    lines[2] = "{not json"
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match="line 3 is corrupt"):
        run(tmp_path, max_evals=5, resume=True)
