"""Supernet training faults: SIGKILL of a training child at exact checkpointing points and at a
random moment (the checkpoint on disk stays loadable, resume gives the uninterrupted weights),
and NaN / Inf losses (the step is rolled back and reported; no non-finite checkpoint)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.supernet.checkpoint import META_FILE, read_checkpoint, save_checkpoint
from hybridmoo.supernet.training import train_supernet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from train_job import TINY  # noqa: E402

torch.set_num_threads(1)

# (fault, step of the checkpoint on disk after the kill); a checkpoint is two renames
KILLS = [
    ({"TRAIN_KILL_AFTER_RENAME": 3}, 2),   # step 2's tensors renamed, its JSON not yet
    ({"TRAIN_KILL_BEFORE_RENAME": 5}, 2),  # step 3's temp files written, nothing renamed
    ({"TRAIN_KILL_AFTER_RENAME": 6}, 3),   # a whole step-3 checkpoint, killed before step 4
]


def child_env(**extra: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAIN_KILL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(run_dir)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optimizer."))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, torch.Tensor], list[float]]:
    run_dir = tmp_path_factory.mktemp("whole")
    result = train_supernet({**TINY, "run_dir": str(run_dir)}, progress=False)
    return model_tensors(run_dir), result.losses


def assert_resumes_exactly(run_dir: Path, uninterrupted) -> None:
    tensors, losses = uninterrupted
    resumed = train_supernet({**TINY, "run_dir": str(run_dir)}, resume=True, progress=False)
    assert resumed.losses == losses
    got = model_tensors(run_dir)
    assert got.keys() == tensors.keys()
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize(("fault", "step"), KILLS, ids=["torn", "before-rename", "whole"])
def test_sigkill_while_checkpointing_leaves_a_loadable_checkpoint(tmp_path, uninterrupted,
                                                                  fault, step):
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(HERE / "train_job.py"), str(run_dir)],
                            env=child_env(**fault), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _, info = read_checkpoint(run_dir)  # never a half-written checkpoint
    assert info["meta"]["step"] == step
    assert_resumes_exactly(run_dir, uninterrupted)


def test_sigkill_at_a_random_moment_then_resume(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(HERE / "train_job.py"), str(run_dir)],
                             env=child_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / META_FILE).exists():  # the first checkpoint, then kill mid-training
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    _, info = read_checkpoint(run_dir)
    assert 1 <= info["meta"]["step"] <= 4
    assert_resumes_exactly(run_dir, uninterrupted)


# -- NaN / Inf losses ------------------------------------------------------------------------


class PoisonedData:
    """Wraps the real data so that the training batches listed in ``poisoned`` (0-based call
    order) carry ``value`` pixels: the loss of those steps is NaN or Inf."""

    def __init__(self, poisoned: set[int], value: float) -> None:
        self.poisoned, self.value, self.calls = poisoned, value, 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import hybridmoo.supernet.training as training

        real = training.epoch_batches

        def batches(dataset, batch_size, seed, epoch, skip=0):
            for x, y in real(dataset, batch_size, seed, epoch, skip):
                if self.calls in self.poisoned:
                    x = x.clone()
                    x[0, 0, 0, 0] = self.value
                self.calls += 1
                yield x, y

        monkeypatch.setattr(training, "epoch_batches", batches)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_step_is_rolled_back_and_reported(tmp_path, monkeypatch, caplog, value):
    """Batches 1 and 2 are poisoned: both steps are skipped (weights, BatchNorm statistics and
    optimizer state as before), counted, logged; the checkpoint holds only finite numbers."""
    PoisonedData({1, 2}, value).install(monkeypatch)
    with caplog.at_level("WARNING", logger="hybridmoo"):
        result = train_supernet({**TINY, "run_dir": str(tmp_path)}, progress=False)
    assert result.skipped_steps == 2 and result.step == 4
    assert sum("not finite" in r.getMessage() for r in caplog.records) == 2
    assert math.isfinite(result.losses[0]) and all(math.isnan(v) for v in result.losses[1:3])
    tensors, info = read_checkpoint(tmp_path)
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert info["meta"]["skipped_steps"] == 2


def test_a_skipped_step_changes_nothing(tmp_path):
    """One poisoned step between two clean ones leaves the same state as the step not taken."""
    import hybridmoo.supernet.training as training
    from hybridmoo.data import make_data
    from hybridmoo.supernet.factory import make_supernet
    from hybridmoo.supernet.train_config import TrainConfig

    cfg = TrainConfig(**TINY)
    torch.manual_seed(0)
    data = make_data(cfg.data, cfg.image_size)
    sn = make_supernet(cfg.model, data.num_classes, image_size=cfg.image_size)
    optimizer, _ = training._optimizer(sn, cfg)
    x, y = next(training.epoch_batches(data.train, cfg.batch_size, cfg.seed, 0))
    smallest = [training.fp32(sn.smallest())]
    training.sandwich_step(sn, optimizer, x, y, smallest, cfg.distill)
    before = {k: v.clone() for k, v in sn.model.state_dict().items()}
    opt_before = optimizer_state(optimizer)
    bad = x.clone()
    bad[3] = math.nan
    loss = training.sandwich_step(sn, optimizer, bad, y, smallest, cfg.distill)
    assert math.isnan(loss)
    after = sn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    opt_after = optimizer_state(optimizer)
    assert opt_after.keys() == opt_before.keys()
    assert all(torch.equal(torch.as_tensor(opt_before[k]), torch.as_tensor(opt_after[k]))
               for k in opt_before)  # Adam moments and step counts
    assert all(p.grad is None for p in sn.parameters())

    sn.model.fc.weight.data[0, 0] = math.nan  # weights gone bad by any other way: never saved
    with pytest.raises(ConfigError, match="refusing to checkpoint non-finite weights"):
        save_checkpoint(tmp_path, sn, optimizer=optimizer)
    assert list(tmp_path.iterdir()) == []


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[tuple[int, str], object]:
    return {(i, k): v.clone() if torch.is_tensor(v) else v
            for i, state in optimizer.state_dict()["state"].items() for k, v in state.items()}


def test_too_many_non_finite_steps_in_a_row_stop_with_a_clear_error(tmp_path, monkeypatch):
    PoisonedData(set(range(100)), math.nan).install(monkeypatch)
    with pytest.raises(ConfigError, match=r"3 training steps in a row had a non-finite loss"):
        train_supernet({**TINY, "steps": 8, "run_dir": str(tmp_path)}, progress=False)
    tensors, info = read_checkpoint(tmp_path)  # the last one, before the stop: finite
    assert info["meta"]["step"] == 2 and info["meta"]["skipped_steps"] == 2
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
