"""Measurements of one network: latency (warm-up, then the median of repeated runs), MACs and
size in bytes (:func:`hybridmoo.evaluate.size.size_bytes`), and the devices they are measured
on."""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.size import size_bytes as size_bytes  # re-exported for callers

MIN_REPEAT_MS = 2.0  # a timed round lasts at least this long
MAX_CALLS = 1000


@dataclass(frozen=True)
class LatencyStats:
    """Latency of repeated runs: the median in milliseconds, the coefficient of variation
    (standard deviation / mean) and every run's time."""

    median_ms: float
    cv: float
    runs_ms: tuple[float, ...]


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` names ("cpu", "cuda", "cuda:1", "mps"); ConfigError when it
    is malformed or not available on this machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {str(name)!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ConfigError(f"device {str(name)!r} is not available: this machine has "
                              f"{count} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {str(name)!r} is not available on this machine")
        return device
    raise ConfigError(f"unsupported device {str(name)!r}: use cpu, cuda, cuda:N or mps")


def device_name(device: str | torch.device) -> str:
    """A human-readable name of the hardware: the CPU model or the GPU name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads (None: leave as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_runs(run: Callable[[], Any], *, warmup: int, repeats: int,
              sync: Callable[[], None] | None = None, min_ms: float = MIN_REPEAT_MS
              ) -> LatencyStats:
    """Call ``run`` ``warmup`` times untimed, then time ``repeats`` rounds; a round runs it
    often enough to last about ``min_ms`` (timeit-style, so that timer resolution and per-call
    jitter of sub-millisecond networks average out) and counts the time per call."""
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")
    for _ in range(warmup):
        run()
    if sync:
        sync()
    start = time.perf_counter()
    run()
    if sync:
        sync()
    once_ms = (time.perf_counter() - start) * 1000.0
    number = max(1, min(MAX_CALLS, math.ceil(min_ms / max(once_ms, 1e-6))))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            run()
        if sync:
            sync()
        runs.append((time.perf_counter() - start) * 1000.0 / number)
    mean = statistics.fmean(runs)
    cv = statistics.pstdev(runs) / mean if mean > 0 else 0.0
    return LatencyStats(statistics.median(runs), cv, tuple(runs))


def measure_latency(net: nn.Module, example: torch.Tensor, *, warmup: int = 3,
                    repeats: int = 20, threads: int | None = None) -> LatencyStats:
    """Latency of ``net(example)`` in eval mode on the device ``net`` and ``example`` are on
    (CUDA runs are synchronised)."""
    net.eval()
    sync = None
    if example.device.type == "cuda":
        def sync() -> None:
            torch.cuda.synchronize(example.device)
    with torch.inference_mode(), torch_threads(threads):
        return time_runs(lambda: net(example), warmup=warmup, repeats=repeats, sync=sync)


def measure_onnx_latency(path: Path | Any, example: torch.Tensor | np.ndarray, *,
                         warmup: int = 3, repeats: int = 20, threads: int = 1) -> LatencyStats:
    """Latency of an ONNX model (a file or an onnxruntime session) on the CPU."""
    from hybridmoo.evaluate.onnx import onnx_session

    session = onnx_session(Path(path), threads) if isinstance(path, str | Path) else path
    x = example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else example
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    return time_runs(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)


def count_macs(net: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of ``net(example)`` (``torch.utils.flop_counter`` FLOPs / 2),
    for the whole batch of ``example``. Attention is counted as its two matmuls: timm's fused
    attention (``scaled_dot_product_attention``) is switched off for the count, since whether
    the counter sees its kernel depends on the torch version and the device."""
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    fused = [m for m in net.modules() if getattr(m, "fused_attn", None) is True]
    for m in fused:
        m.fused_attn = False
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            net(example)
    finally:
        for m in fused:
            m.fused_attn = True
    return int(counter.get_total_flops()) // 2
