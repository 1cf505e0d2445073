"""Pipeline faults: a supernet pipeline (training, search with refinement rounds, export,
report) run through the CLI in a child process is stopped by a real SIGKILL at points spread
over every stage, or by Ctrl-C (SIGINT) during training, then continued with ``--resume``;
the resumed run must equal an uninterrupted one: the same journal (nothing lost, nothing
twice), the same exported front, the refined weights of every refined record, no temporary
leftovers. Deterministic settings: latency from a fitted latency model, one evaluation at a
time, one thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
JOB = HERE / "pipeline_job.py"

PIPELINE = {
    "supernet": {"model": "test_resnet", "image_size": 32, "steps": 8, "batch_size": 32,
                 "save_every": 4, "calib_batches": 1},
    "evaluation": {"bn_batches": 1},
    "max_evals": 4, "algorithm": "random", "seed": 0,
    "refine": {"every": 2, "survivors": 1, "steps": 2, "front_steps": 2},
    "run_dir": "run",
}

# (point, N, signal): spread over training, search, a refinement round, export and report;
# the default test run takes three of them (one per kind of stage), -m slow the rest
FAULTS = [
    ("train-step", 2, signal.SIGKILL, True),    # before the first training checkpoint
    ("train-step", 6, signal.SIGKILL, True),    # between checkpoints (resumes from step 4)
    ("train-saved", 2, signal.SIGKILL, True),   # the last step's checkpoint, before the metrics
    ("journal", 2, signal.SIGKILL, True),       # search: two evaluations journaled
    ("refine-round", 1, signal.SIGKILL, True),  # a round refined its survivor, nothing saved
    ("journal", 5, signal.SIGKILL, False),      # later in the search, after the first round
    ("export-point", 1, signal.SIGKILL, False),  # mid-export: one point written
    ("report", 1, signal.SIGKILL, True),        # the report started
    ("train-step", 3, signal.SIGINT, False),    # Ctrl-C during training
]
CASES = [pytest.param(point, n, sig, id=f"{sig.name}-{point}-{n}",
                      marks=[pytest.mark.slow] if slow else [])
         for point, n, sig, slow in FAULTS]

def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_job(config: Path, *args: str, **fault: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(JOB), str(config), *args],
                          env=child_env(**fault), capture_output=True, text=True, timeout=600,
                          cwd=config.parent)


def write_config(folder: Path, latency_model: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {**PIPELINE, "evaluation": {**PIPELINE["evaluation"],
                                         "latency_model": str(latency_model)}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def outcome(run_dir: Path) -> dict[str, Any]:
    """What a finished run holds, without timings: journal, front, refined weights."""
    records = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    journal = [(json.dumps(r["candidate"], sort_keys=True), r["candidate"]["origin"], r["ok"],
                json.dumps(r["values"], sort_keys=True), r["reason"]) for r in records]
    front = json.loads((run_dir / "export" / "front.json").read_text())
    points = [(p["key"], p["origin"], p["parents"], p["metrics"]) for p in front["points"]]
    refined = sorted(p.name for p in (run_dir / "refined").iterdir()) if (
        run_dir / "refined").is_dir() else []
    return {"journal": journal, "front": points, "refined": refined,
            "report": (run_dir / "report" / "report.html").is_file()}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def latency_model(tmp_path_factory) -> Path:
    """A latency model of the pipeline's supernet, fitted once: every run predicts the same
    latencies, so runs can be compared exactly."""
    import torch

    from hybridmoo.evaluate.profiling import profile
    from hybridmoo.supernet import make_supernet

    torch.manual_seed(0)
    sn = make_supernet("test_resnet", 10, image_size=32)
    fitted = profile(sn, samples=6, test_samples=2, repeats=1, warmup=0, runtime="torch",
                     progress=False)
    return fitted.model.save(tmp_path_factory.mktemp("latency") / "latency.json")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, latency_model) -> dict[str, Any]:
    config = write_config(tmp_path_factory.mktemp("whole"), latency_model)
    done = run_job(config)
    assert done.returncode == 0, done.stderr
    result = outcome(config.parent / "run")
    assert any(origin == "refine" for _, origin, *_ in result["journal"])
    return result


@pytest.mark.parametrize(("point", "n", "sig"), CASES)
def test_a_stopped_pipeline_resumes_to_the_uninterrupted_run(tmp_path, latency_model,
                                                             uninterrupted, point, n, sig):
    config = write_config(tmp_path, latency_model)
    run_dir = tmp_path / "run"
    variable = "PIPE_KILL" if sig == signal.SIGKILL else "PIPE_INTERRUPT"
    stopped = run_job(config, **{variable: f"{point}:{n}"})
    if sig == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    else:  # Ctrl-C: exit 130 and a hint that works
        assert stopped.returncode == 130, stopped.stderr
        assert f"resume it with: hybridmoo search --config {config} --resume" in stopped.stderr
        assert "Traceback" not in stopped.stderr
    resumed = run_job(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(run_dir) == uninterrupted
    leftovers = [p.name for p in run_dir.iterdir() if ".tmp" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_overwrite_starts_a_stopped_run_over(tmp_path, latency_model, uninterrupted):
    config = write_config(tmp_path, latency_model)
    assert run_job(config, PIPE_KILL="journal:1").returncode == -signal.SIGKILL
    before = snapshot(tmp_path)
    rerun = run_job(config)  # without --resume: refused with what to do, nothing touched
    assert rerun.returncode == 2
    assert "continue it with --resume" in rerun.stderr and "--overwrite" in rerun.stderr
    assert snapshot(tmp_path) == before
    again = run_job(config, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert outcome(tmp_path / "run") == uninterrupted
