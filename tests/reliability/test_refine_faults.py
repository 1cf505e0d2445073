"""SIGKILL of a search while a refinement runs on a Ray actor, then resume (a real private
Ray cluster on 127.0.0.1 in a child process, ``refine_job.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridmoo.journal import JOURNAL_FILE, ROUND_FILE
from hybridmoo.objectives import EvalResult
from hybridmoo.tasks import RefineJob
from hybridmoo.testing.refine import toy_network

HERE = Path(__file__).resolve().parent
JOB = HERE / "refine_job.py"

pytestmark = pytest.mark.ray


def run_job(run_dir: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(JOB), str(run_dir), str(out), *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):  # what the killed driver's cluster
            os.killpg(proc.pid, signal.SIGKILL)           # left behind goes with its session
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_a_kill_during_a_refinement_on_ray_loses_nothing_and_redoes_it_once(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    killed = run_job(run_dir, out, "--kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = (run_dir / JOURNAL_FILE).read_text().splitlines()
    assert not any(json.loads(line)["candidate"]["origin"] == "refine" for line in before)
    started = json.loads((run_dir / ROUND_FILE).read_text())  # the round the kill cut short
    assert started["round"] == 1 and len(started["survivors"]) == 2

    resumed = run_job(run_dir, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = (run_dir / JOURNAL_FILE).read_text().splitlines()
    assert after[:len(before)] == before  # every journaled record kept
    candidates = [json.dumps(json.loads(line)["candidate"], sort_keys=True) for line in after]
    assert len(set(candidates)) == len(candidates)  # none duplicated
    got = json.loads(out.read_text())
    refined = [EvalResult.from_json(r) for r in got["history"]
               if r["candidate"]["origin"] == "refine"]
    first = [r for r in refined if r.info["round"] == 1]
    # the interrupted round redone once, on the same survivors under the same preferences,
    # with the networks an uninterrupted refinement of them makes
    survivors = [EvalResult.from_json(s) for s in started["survivors"]]
    assert sorted(r.candidate.parents[0] for r in first) == sorted(s.key for s in survivors)
    prefs = tuple(tuple(p) for p in started["preferences"])
    for i, s in enumerate(survivors):
        [mine] = [r for r in first if r.candidate.parents == (s.key,)]
        assert mine.info["front_preference"] == list(prefs[i])
        assert got["networks"][mine.key] == toy_network(RefineJob(s, prefs, i, 1))
    assert set(got["networks"]) == {r.key for r in refined if r.ok}
