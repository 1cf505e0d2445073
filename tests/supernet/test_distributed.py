"""Data-parallel supernet training: batch shards, the gradient all-reduce (two real gloo
processes), and a run under Ray Train's TorchTrainer checked against a single process."""

import json
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from hybridmoo.cli import main
from hybridmoo.data import batches_per_epoch, epoch_batches, make_data
from hybridmoo.errors import ConfigError
from hybridmoo.supernet import load_supernet, make_supernet
from hybridmoo.supernet.checkpoint import META_FILE
from hybridmoo.supernet.distributed import (
    GradientSync,
    _user_error,
    shard_batches,
    train_supernet_distributed,
)
from hybridmoo.supernet.train_config import TrainConfig
from hybridmoo.supernet.training import (
    _configs,
    _optimizer,
    _resume,
    sandwich_step,
    train_supernet,
)

torch.set_num_threads(1)
TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 16, "steps": 3,
        "random_subnets": 1, "calib_batches": 1, "save_every": 2, "warmup_steps": 1}


class _Rows(Dataset):
    """A dataset that is not a TensorDataset (loaded item by item, like an image folder)."""

    def __init__(self, tensors: TensorDataset) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, i: int):
        return self.tensors[i]


@pytest.mark.parametrize("wrap", [False, True])
def test_shards_are_the_rank_strided_rows_of_the_single_process_batches(wrap):
    base = TensorDataset(torch.randn(23, 2), torch.arange(23))
    dataset = _Rows(base) if wrap else base
    whole = list(epoch_batches(base, 5, 7, 2, 1))
    shards = [list(shard_batches(dataset, 5, 7, 2, 1, rank, 2)) for rank in (0, 1)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 3
    for k, (x, y) in enumerate(whole):
        for rank in (0, 1):
            assert torch.equal(shards[rank][k][0], x[rank::2])
            assert torch.equal(shards[rank][k][1], y[rank::2])


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.bn, self.lin2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
        self.unused = nn.Linear(3, 3)  # no replica uses it: its gradient must stay None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.relu(self.bn(self.lin1(x))))


def _sync_rank(rank: int, store: str) -> None:
    """One of two gloo replicas (run by torch.multiprocessing.spawn; asserts raise there)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        net = _Tiny()
        x, y = torch.randn(7, 4), torch.randint(0, 3, (7,))  # shards of 4 and 3 rows
        start = {k: v.clone() for k, v in net.state_dict().items()}
        # the reference, in this one process: each shard's gradients and BatchNorm statistics
        # weighted by its share of the batch (what the replicas must agree on)
        grads, stats, ref_loss = {}, {}, 0.0
        for r in (0, 1):
            net.load_state_dict(start)
            net.zero_grad(set_to_none=True)
            w = len(x[r::2]) / len(x)
            loss = F.cross_entropy(net(x[r::2]), y[r::2])
            loss.backward()
            ref_loss += w * float(loss)
            for name, p in net.named_parameters():
                if p.grad is not None:
                    grads[name] = grads.get(name, 0) + w * p.grad
            for name in ("running_mean", "running_var"):
                stats[name] = stats.get(name, 0) + w * getattr(net.bn, name)
        net.load_state_dict(start)
        net.zero_grad(set_to_none=True)
        sync = GradientSync(net, len(x[rank::2]) / len(x))
        loss = F.cross_entropy(net(x[rank::2]), y[rank::2])
        loss.backward()
        value, finite = sync(net, float(loss), True)
        assert finite and value == pytest.approx(ref_loss, rel=1e-6)
        for name, p in net.named_parameters():
            if name.startswith("unused."):
                assert p.grad is None
            else:
                torch.testing.assert_close(p.grad, grads[name], rtol=1e-6, atol=1e-7)
        for name, value in stats.items():
            torch.testing.assert_close(getattr(net.bn, name), value, rtol=1e-6, atol=1e-7)
        # a NaN gradient on rank 1 alone: both replicas get the same "not finite" verdict
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[rank::2]), y[rank::2]).backward()
        if rank == 1:
            net.lin1.weight.grad[0, 0] = float("nan")
        finite_here = bool(torch.isfinite(net.lin1.weight.grad).all())
        assert sync(net, 1.0, finite_here) == (pytest.approx(1.0), False)
    finally:
        dist.destroy_process_group()


def test_gradient_sync_between_two_gloo_processes(tmp_path, monkeypatch):
    """Two real replicas: the all-reduced gradients equal the shard-weighted sum, unused
    parameters keep no gradient, BatchNorm statistics agree, and one replica's NaN makes
    both roll back."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo on 127.0.0.1 only
    torch.multiprocessing.spawn(_sync_rank, args=(str(tmp_path / "store"),), nprocs=2,
                                join=True)


def test_bad_requests_fail_before_any_worker_starts(tmp_path, capsys):
    with pytest.raises(ConfigError, match="workers must be an int >= 1"):
        train_supernet_distributed(TrainConfig(**TINY), workers=0)
    with pytest.raises(ConfigError, match="batch_size >= 20"):
        train_supernet_distributed(TrainConfig(**TINY), workers=20)
    with pytest.raises(ConfigError, match="resume needs a run_dir"):
        train_supernet_distributed(TrainConfig(**TINY), resume=True)
    with pytest.raises(ConfigError, match="no supernet checkpoint"):
        train_supernet_distributed(TrainConfig(**TINY, run_dir=str(tmp_path)), resume=True)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(TINY))
    assert main(["train-supernet", "-c", str(config), "--backend", "local", "--workers",
                 "2"]) == 2
    assert "--workers > 1 needs --backend ray" in capsys.readouterr().err


def test_a_worker_error_reaches_the_driver_as_our_error():
    from ray.train import WorkerGroupError

    bad = ConfigError("3 training steps in a row had a non-finite loss")
    assert _user_error(WorkerGroupError("rank 1 failed", {0: RuntimeError("x"), 1: bad})) is bad
    other = _user_error(WorkerGroupError("rank 0 failed", {0: RuntimeError("oom")}))
    assert isinstance(other, ConfigError) and "rank 0 failed" in str(other)


def _stash(total: dict, loss: list, w: float):
    """A step sync that adds the shard's gradients (and loss) times ``w`` to ``total``
    (``loss``) and rolls the step back."""

    def keep(net, value, finite):
        loss.append(w * value)
        for name, p in net.named_parameters():
            if p.grad is not None:
                total[name] = total.get(name, 0) + p.grad * w
        return value, False

    return keep


def _ghost_batch_reference(cfg: TrainConfig, run_dir, workers: int):
    """Single-process training from ``run_dir``'s checkpoint to ``cfg.steps`` in which every
    sub-network runs on each rank's rows separately (so BatchNorm normalises per shard, as on
    the replicas) and the shard gradients, weighted by shard size, add up before one step."""
    data = make_data(cfg.data, cfg.image_size)
    sn = make_supernet(cfg.model, data.num_classes, spec=cfg.spec, image_size=cfg.image_size)
    optimizer, scheduler = _optimizer(sn, cfg)
    rng = np.random.default_rng(cfg.seed)
    step, losses = _resume(run_dir, sn, optimizer, rng, cfg)
    scheduler.step_update(step)
    per_epoch = batches_per_epoch(data.train, cfg.batch_size)
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        x, y = next(epoch_batches(data.train, cfg.batch_size, cfg.seed, epoch, skip))
        configs = _configs(sn, cfg, rng)
        total, loss = {}, []
        for rank in range(workers):
            keep = _stash(total, loss, len(x[rank::workers]) / len(x))
            sandwich_step(sn, optimizer, x[rank::workers], y[rank::workers], configs,
                          cfg.distill, sync=keep)
        for name, p in sn.named_parameters():
            p.grad = total.get(name)
        optimizer.step()
        step += 1
        scheduler.step_update(step)
        losses.append(sum(loss))
    return sn, losses


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_workers_match_a_ghost_batch_single_process(ray_cluster, tmp_path, capsys):
    """A single-process run stopped at step 1, resumed through the CLI on 2 Ray Train workers
    (gloo) to step 3. The weights equal a single process that runs each rank's rows as a
    separate ghost batch (shard BatchNorm) and sums the shard-weighted gradients: this
    proves the gradient averaging. Tolerance: rtol 1e-5, atol 1e-6 (float32 all-reduce; in
    practice the two agree bitwise). The whole-batch single-process run differs by design:
    each replica's BatchNorm normalises with its own shard's statistics."""
    run_dir = tmp_path / "run"
    cfg = TrainConfig(**TINY, run_dir=str(run_dir))
    first = train_supernet(cfg, progress=False, stop_at=1)
    ref, ref_losses = _ghost_batch_reference(cfg, run_dir, workers=2)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({**TINY, "run_dir": "run"}))

    assert main(["train-supernet", "-c", str(config), "--workers", "2", "--resume",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained: 3 steps" in out and "largest val accuracy" in out
    meta = json.loads((run_dir / META_FILE).read_text())["meta"]
    assert meta["step"] == 3 and meta["skipped_steps"] == 0
    assert set(meta["metrics"]) == {"largest_val_accuracy", "smallest_val_accuracy"}
    assert meta["losses"][0] == first.losses[0]  # step 1 came from the single process
    np.testing.assert_allclose(meta["losses"], ref_losses, rtol=1e-5)
    sn = load_supernet(run_dir)
    trained = dict(sn.model.named_parameters())
    for name, p in ref.model.named_parameters():
        torch.testing.assert_close(trained[name], p, rtol=1e-5, atol=1e-6, msg=name)
    moved = max(float((trained[n] - p).detach().abs().max())
                for n, p in first.supernet.model.named_parameters())
    assert moved > 1e-4  # two steps were taken on the workers
