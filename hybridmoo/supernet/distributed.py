"""Data-parallel supernet training under Ray Train's ``TorchTrainer`` (gloo on CPU, NCCL on GPU).

Every worker builds the same supernet (same seed; rank 0's weights are then broadcast, as DDP
does), draws the same global batch as the single-process run and trains on its rank-strided
rows of it (``x[rank::workers]``), with the same sub-network configs (same RNG). After the
backward passes of a sandwich step one ``all_reduce`` sums, over the replicas, each one's
gradients weighted by its share of the batch (a gradient no replica has stays ``None``, as in
a single process), the BatchNorm running statistics likewise (a weighted average, so replicas
stay identical), the loss, and a count of replicas whose loss or gradients are not finite:
every replica rolls the step back or takes it on the same numbers, so they never diverge or
wait on each other. Gradients are averaged by hand rather than through DDP because a sandwich
step runs several forward / backward passes of sub-networks that leave parameters unused.

What equals the single-process run: the batches, sub-networks, learning rates and the
gradient of the parameters *given the forward pass*. What does not: in training mode each
replica's BatchNorm normalises with its own shard's statistics (there is no CPU
SyncBatchNorm), so the weights match a single process that runs every sub-network on each
shard separately and adds the gradients weighted by shard size (ghost batches), not one that
normalises the whole batch at once.

Rank 0 writes the checkpoints (:func:`~hybridmoo.supernet.checkpoint.save_checkpoint`) to
``run_dir`` every ``save_every`` steps and at the end, with the validation metrics; the driver
loads the final one back. ``run_dir`` must be on a file system every worker sees (for resume
and for the driver); without a ``run_dir`` (one machine only) a temporary directory of the
driver's holds the final checkpoint. Ray Train's own storage goes to a temporary directory,
removed afterwards: no checkpoint goes through Ray's (pickling) checkpoint machinery.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset, default_collate

from hybridmoo.backends.ray_cluster import (
    LOOPBACK_HOSTS,
    RAY_INSTALL,
    connect,
    disconnect,
    require_ray,
)
from hybridmoo.data import batches_per_epoch, epoch_batches, make_data
from hybridmoo.errors import ConfigError, HybridMooError, MissingExtraError, one_line
from hybridmoo.progress import Progress
from hybridmoo.supernet.checkpoint import load_supernet, read_checkpoint
from hybridmoo.supernet.factory import make_supernet
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.train_config import TrainConfig
from hybridmoo.supernet.training import (
    TrainResult,
    _configs,
    _optimizer,
    _resume,
    _save,
    count_bad_step,
    evaluate_subnet,
    fp32,
    sandwich_step,
)

log = logging.getLogger("hybridmoo")

_BN = torch.nn.modules.batchnorm._BatchNorm
_GROUP_TIMEOUT_S = 1800  # process group operations (Ray Train's TorchConfig default)


def train_supernet_distributed(config: TrainConfig | Mapping[str, Any], *, workers: int = 2,
                               use_gpu: bool = False, address: str | None = None,
                               resume: bool = False, progress: bool | None = None
                               ) -> TrainResult:
    """Train as :func:`~hybridmoo.supernet.training.train_supernet` does, on ``workers``
    data-parallel Ray Train workers (one GPU each with ``use_gpu``). ``address`` joins a Ray
    cluster as :class:`~hybridmoo.backends.RayBackend` does (None: ``RAY_ADDRESS`` or a
    private cluster on 127.0.0.1). Returns rank 0's supernet, loaded from its checkpoint."""
    require_ray("distributed supernet training (Ray Train)")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an int >= 1, got {workers!r}")
    if workers > cfg.batch_size:
        raise ConfigError(f"{workers} workers need batch_size >= {workers} (each takes a "
                          f"share of every batch), got {cfg.batch_size}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if resume and run_dir is None:
        raise ConfigError("resume needs a run_dir")
    if resume:
        read_checkpoint(run_dir)  # a missing or broken checkpoint fails here, before Ray starts
    data = make_data(cfg.data, cfg.image_size)
    if batches_per_epoch(data.train, cfg.batch_size) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(data.train)} "
                          "training examples")
    connection = connect(address, float(workers))
    try:
        _check_cluster(workers, use_gpu)
        with tempfile.TemporaryDirectory(prefix="hybridmoo-train-") as tmp:
            save_dir = run_dir or Path(tmp) / "checkpoint"
            start = time.monotonic()
            _fit(cfg, workers, use_gpu, resume, save_dir, Path(tmp) / "ray", progress)
            seconds = time.monotonic() - start
            _, info = read_checkpoint(save_dir)
            sn = load_supernet(save_dir)
    finally:
        disconnect(connection)
    meta = info["meta"]
    return TrainResult(sn, data, int(meta["step"]),
                       [float(v) for v in meta["losses"]], dict(meta["metrics"]), seconds,
                       run_dir, int(meta["skipped_steps"]))


# -- the driver ----------------------------------------------------------------------------------


def _check_cluster(workers: int, use_gpu: bool) -> None:
    """Ray Train would wait for workers that can never be placed: say so at once."""
    import ray

    total = ray.cluster_resources()
    for name, need in (("CPU", workers), ("GPU", workers if use_gpu else 0)):
        if need > float(total.get(name, 0.0)):
            raise ConfigError(f"{workers} training workers need {need} {name}(s), but the Ray "
                              f"cluster has {float(total.get(name, 0.0)):g}")


def _fit(cfg: TrainConfig, workers: int, use_gpu: bool, resume: bool, save_dir: Path,
         storage: Path, progress: bool | None) -> None:
    import ray

    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:
        raise MissingExtraError(f"distributed training needs Ray Train: {RAY_INSTALL} "
                                f"({one_line(exc)})") from None

    env = {"OMP_NUM_THREADS": "1"}
    backend, group = "nccl" if use_gpu else "gloo", None
    torch_config = TorchConfig(backend=backend)
    if ray.util.get_node_ip_address() in LOOPBACK_HOSTS:  # a one-node cluster on 127.0.0.1
        env.update(GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo")  # not the host's address
        group, torch_config = (backend, _free_loopback_port()), _own_group_config(backend)
    queue = _progress_queue(progress)
    job = _Job(cfg, resume, str(save_dir), queue, group)
    trainer = TorchTrainer(
        _worker, train_loop_config={"job": job}, torch_config=torch_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="train-supernet", storage_path=str(storage),
                             worker_runtime_env={"env_vars": env}))
    try:
        with _ProgressPump(queue, cfg.steps, progress):
            trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise _user_error(exc) from None
    finally:
        if queue is not None:
            queue.shutdown()


def _free_loopback_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _own_group_config(backend: str) -> Any:
    """A TorchConfig under which Ray Train leaves the process group to the workers
    (:func:`_loopback_group`): the one it makes itself puts rank 0's TCPStore on every
    interface (0.0.0.0 and ``::``), whatever address the cluster has."""
    from ray.train.backend import Backend
    from ray.train.torch import TorchConfig

    class OwnGroupBackend(Backend):
        share_cuda_visible_devices = True  # as Ray Train's torch backend

    class OwnGroupConfig(TorchConfig):
        @property
        def backend_cls(self) -> type:
            return OwnGroupBackend

    return OwnGroupConfig(backend=backend)


def _user_error(exc: BaseException) -> BaseException:
    """Our own error when a worker raised one (a bad config, too many non-finite steps)."""
    seen: list[BaseException] = []
    todo = [exc, *getattr(exc, "worker_failures", {}).values()]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, HybridMooError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return ConfigError(f"distributed supernet training failed: {one_line(exc)}")


def _progress_queue(progress: bool | None) -> Any:
    """A queue actor for rank 0's progress messages, when the progress bar shows."""
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from ray.util.queue import Queue

    return Queue(actor_options={"num_cpus": 0})


class _ProgressPump:
    """Shows rank 0's ``(step, loss)`` messages on the driver's progress bar from a thread,
    so that ``trainer.fit()`` keeps the main thread (and its Ctrl-C handling)."""

    def __init__(self, queue: Any, total: int, progress: bool | None) -> None:
        self.queue, self.bar = queue, Progress(total, progress, title="train-supernet")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def __enter__(self) -> _ProgressPump:
        self.bar.__enter__()
        if self.queue is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.bar.__exit__(*exc)

    def _pump(self) -> None:
        from ray.util.queue import Empty

        while True:  # until training is over and every message is shown
            try:
                step, loss = self.queue.get(timeout=0.5)
            except Empty:
                if self.done.is_set():
                    return
                continue
            except Exception:  # the queue actor died: no more progress to show
                return
            self.bar.update(step, f"loss {loss:.3f}")


# -- the workers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every worker gets (through Ray's object store, never a file)."""

    cfg: TrainConfig
    resume: bool
    save_dir: str
    queue: Any  # a ray.util.queue.Queue for rank 0's progress, or None
    group: tuple[str, int] | None = None  # (backend, port): make a loopback process group


def _worker(loop_config: dict[str, Any]) -> None:
    """One replica: the single-process training loop on this rank's shard of every batch."""
    import ray.train
    import ray.train.torch

    job: _Job = loop_config["job"]
    cfg, save_dir = job.cfg, Path(job.save_dir)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if job.group is not None:
        _loopback_group(*job.group, rank, world)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.manual_seed(cfg.seed)
    data = make_data(cfg.data, cfg.image_size)
    sn = make_supernet(cfg.model, cfg.num_classes or data.num_classes, spec=cfg.spec,
                       image_size=cfg.image_size, checkpoint=cfg.checkpoint)
    sn.to(ray.train.torch.get_device())
    optimizer, scheduler = _optimizer(sn, cfg)
    rng = np.random.default_rng(cfg.seed)
    step, losses = 0, []
    if job.resume:
        step, losses = _resume(save_dir, sn, optimizer, rng, cfg)
        scheduler.step_update(step)
    _broadcast_state(sn)
    per_epoch = batches_per_epoch(data.train, cfg.batch_size)  # > 0: the driver checked
    sync = GradientSync(sn, len(range(rank, cfg.batch_size, world)) / cfg.batch_size)
    bad_in_a_row, skipped = 0, sum(math.isnan(v) for v in losses)
    periodic = cfg.run_dir is not None and cfg.save_every > 0
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        for x, y in shard_batches(data.train, cfg.batch_size, cfg.seed, epoch, skip, rank,
                                  world):
            losses.append(sandwich_step(sn, optimizer, x, y, _configs(sn, cfg, rng),
                                        cfg.distill, sync=sync))
            step += 1
            bad_in_a_row, skipped = count_bad_step(losses[-1], step, bad_in_a_row, skipped)
            scheduler.step_update(step)
            if rank == 0 and job.queue is not None:
                job.queue.put((step, losses[-1]))
            if rank == 0 and periodic and step % cfg.save_every == 0 and step < cfg.steps:
                _save(save_dir, sn, optimizer, rng, cfg, step, losses)
            if step >= cfg.steps:
                break
    _check_replicas_agree(sn)
    if rank == 0:
        metrics = {f"{name}_val_accuracy": evaluate_subnet(sn, config, data, cfg)
                   for name, config in (("largest", sn.largest()),
                                        ("smallest", fp32(sn.smallest())))}
        _save(save_dir, sn, optimizer, rng, cfg, step, losses, metrics)


def _loopback_group(backend: str, port: int, rank: int, world: int) -> None:
    """The process group on a TCPStore that rank 0 serves on 127.0.0.1:``port`` only."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=_GROUP_TIMEOUT_S)
    fd = socket.create_server(("127.0.0.1", port)).detach() if rank == 0 else None
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timeout, master_listen_fd=fd)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


def shard_batches(dataset: Any, batch_size: int, seed: int, epoch: int, skip: int, rank: int,
                  world: int) -> Any:
    """Rank ``rank``'s rows (``[rank::world]``) of each global batch that
    :func:`~hybridmoo.data.epoch_batches` yields for ``dataset``; only those rows are loaded."""
    n = len(dataset)
    positions = TensorDataset(torch.arange(n))  # the shuffle depends on len, seed, epoch only
    for (index,) in epoch_batches(positions, batch_size, seed, epoch, skip):
        rows = index[rank::world]
        if isinstance(dataset, TensorDataset):
            yield tuple(t[rows] for t in dataset.tensors)
        else:
            yield tuple(default_collate([dataset[int(i)] for i in rows]))


class GradientSync:
    """The :data:`~hybridmoo.supernet.training.StepSync` of one replica whose shard is
    ``weight`` of the global batch: one ``all_reduce`` (sum) of the weighted gradients, the
    weighted BatchNorm running statistics, per-parameter "has a gradient" counts, the weighted
    loss and the count of replicas with a non-finite loss or gradient."""

    def __init__(self, sn: torch.nn.Module, weight: float) -> None:
        self.params = [p for p in sn.parameters() if p.requires_grad]
        self.bns = [m for m in sn.modules() if isinstance(m, _BN) and m.track_running_stats]
        self.weight = weight

    def __call__(self, sn: torch.nn.Module, loss: float, finite: bool) -> tuple[float, bool]:
        import torch.distributed as dist

        device = self.params[0].device
        # looked up each step: sub-network masking swaps in new statistics tensors
        stats = [t for m in self.bns for t in (m.running_mean, m.running_var)]
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                 for p in self.params]
        parts += [t.reshape(-1) for t in stats]
        flat = _flat(parts) * self.weight
        tail = [float(p.grad is not None) for p in self.params]
        tail += [loss * self.weight, 0.0 if finite else 1.0]
        flat = torch.cat([flat, torch.tensor(tail, dtype=flat.dtype, device=device)])
        dist.all_reduce(flat)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
            for t in stats:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
        has_grad = flat[offset:offset + len(self.params)]
        for p, count in zip(self.params, has_grad.tolist(), strict=True):
            if count == 0:
                p.grad = None  # unused by every replica: the optimizer skips it, as in one process
        loss, bad = flat[-2:].tolist()
        return loss, bad == 0


def _broadcast_state(sn: Supernet) -> None:
    """Rank 0's parameters and buffers to every replica (as DDP does at construction)."""
    import torch.distributed as dist

    tensors = _float_state(sn)
    flat = _flat(tensors)
    dist.broadcast(flat, src=0)
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def _check_replicas_agree(sn: Supernet) -> None:
    """The replicas' weights must be identical at the end (one collective); else a bug."""
    import torch.distributed as dist

    flat = _flat(_float_state(sn))
    both = torch.cat([flat, -flat])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if not torch.equal(both[:flat.numel()], -both[flat.numel():]):
        raise HybridMooError("the training replicas' weights diverged")


def _float_state(sn: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in (*sn.parameters(), *sn.buffers()) if t.is_floating_point()]


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One flat copy of ``tensors`` in a dtype that holds each exactly (one collective)."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
