"""``profile``: measure random sub-networks of a supernet on a device and fit a
:class:`LatencyModel` to them, then check it on held-out random sub-networks (Kendall tau of
predicted vs measured latency) and report the measurement noise (coefficient of variation of
the repeated runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hybridmoo.data import ImageData, eval_batches
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency import check_runtime, network_latency
from hybridmoo.evaluate.latency_model import (
    LatencyModel,
    LayerCost,
    layer_costs,
    supernet_fingerprint,
)
from hybridmoo.evaluate.measure import device_name, resolve_device, torch_threads
from hybridmoo.progress import Progress
from hybridmoo.supernet.supernet import Supernet

CALIB_IMAGES = 16


@dataclass
class Measured:
    """One measured sub-network."""

    config: dict[str, Any]
    costs: dict[str, LayerCost]
    kind: str
    ms: float
    cv: float


@dataclass
class ProfileResult:
    """The fitted model and how well it predicts held-out sub-networks."""

    model: LatencyModel
    kendall_tau: float
    cv_median: float
    cv_max: float
    fit: list[Measured] = field(default_factory=list)
    test: list[Measured] = field(default_factory=list)
    predicted_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def profile(supernet: Supernet, *, device: str = "cpu", samples: int = 60,
            test_samples: int = 50, batch_size: int = 1, seed: int = 0,
            runtime: str = "auto", warmup: int = 3, repeats: int = 20, threads: int = 1,
            data: ImageData | None = None, sampling: str = "spread",
            progress: bool | None = None) -> ProfileResult:
    """Measure ``samples`` random sub-networks (half of them FP32, so every runtime gets
    measurements; plus the largest and smallest), fit a latency model, and test it on
    ``test_samples`` other random sub-networks. ``sampling`` draws them "spread" over the size
    range (:meth:`SearchSpace.sample_spread`, what a search visits) or "uniform" per dimension
    (almost all near the middle size). Inputs are ``data``'s validation images, or
    random ones; without calibrated activation ranges the supernet is calibrated on them for
    the duration of the profile."""
    for name, value, low in (("samples", samples, 2), ("test_samples", test_samples, 2),
                             ("batch_size", batch_size, 1), ("repeats", repeats, 1),
                             ("warmup", warmup, 0), ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    check_runtime(runtime)
    if sampling not in ("spread", "uniform"):
        raise ConfigError(f"sampling must be 'spread' or 'uniform', got {sampling!r}")
    dev = resolve_device(device)
    start = time.perf_counter()
    example, calib = _inputs(supernet, data, batch_size, seed)
    example, calib = example.to(dev), calib.to(dev)
    space = supernet.space
    rng = np.random.default_rng(seed)
    fp32 = {n: 32 for n in space.names if n.endswith("_bits")}
    configs = [supernet.largest(), {**supernet.smallest(), **fp32}, supernet.smallest()]
    draw = space.sample_spread if sampling == "spread" else space.sample
    configs += [draw(rng) | (fp32 if i % 2 == 0 else {})
                for i in range(max(samples - len(configs), 0))]
    test_rng = np.random.default_rng([seed, 1])
    tests = [draw(test_rng) for _ in range(test_samples)]
    kwargs = {"device": dev, "runtime": runtime, "warmup": warmup, "repeats": repeats,
              "threads": threads}
    saved_ranges, saved_device = dict(supernet.act_ranges), _module_device(supernet)
    supernet.to(dev)
    try:
        if fp32 and not supernet.act_ranges:
            supernet.calibrate([calib])
        with Progress(len(configs) + len(tests), progress, title="profile") as bar, \
                torch_threads(threads):
            fit = []
            for c in configs:
                fit.append(_measure(supernet, c, example, calib, kwargs))
                bar.update(len(fit), f"{fit[-1].kind} {fit[-1].ms:.3f} ms")
            test = []
            for c in tests:
                test.append(_measure(supernet, c, example, calib, kwargs))
                bar.update(len(fit) + len(test), f"{test[-1].kind} {test[-1].ms:.3f} ms")
    finally:
        supernet.act_ranges = saved_ranges
        supernet.to(saved_device)
    model = LatencyModel.fit([(m.costs, m.kind, m.ms) for m in fit],
                             fingerprint=supernet_fingerprint(supernet),
                             device=device_name(dev), device_type=dev.type,
                             batch_size=batch_size, runtime=runtime, threads=threads)
    predicted = [float(model.predict_from_layers(m.costs, m.kind)) for m in test]
    measured = [m.ms for m in test]
    tau = kendall_tau(predicted, measured)
    cvs = [m.cv for m in (*fit, *test)]
    model.quality = {
        "kendall_tau": tau, "cv_median": statistics.median(cvs), "cv_max": max(cvs),
        "mape": float(np.mean([abs(p - m) / m for p, m in zip(predicted, measured,
                                                              strict=True)])),
        "fit_samples": len(fit), "test_samples": len(test), "repeats": repeats,
        "sampling": sampling}
    return ProfileResult(model, tau, statistics.median(cvs), max(cvs), fit, test, predicted,
                         time.perf_counter() - start)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b rank correlation of two equally long sequences."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _measure(sn: Supernet, config: Mapping[str, Any], example: torch.Tensor,
             calib: torch.Tensor, kwargs: dict[str, Any]) -> Measured:
    net = sn.extract(config)
    stats, kind = network_latency(net, example, calibration=[calib], **kwargs)
    return Measured(dict(config), layer_costs(net, example[:1]), kind, stats.median_ms, stats.cv)


def _inputs(sn: Supernet, data: ImageData | None, batch_size: int,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if data is not None:
        x, _ = next(eval_batches(data.val, max(batch_size, CALIB_IMAGES)))
        if len(x) < batch_size:
            raise ConfigError(f"the validation split has fewer than {batch_size} images")
        return x[:batch_size], x[:CALIB_IMAGES]
    gen = torch.Generator().manual_seed(seed)
    shape = (sn.in_chans, sn.image_size, sn.image_size)
    return (torch.randn(batch_size, *shape, generator=gen),
            torch.randn(CALIB_IMAGES, *shape, generator=gen))


def _module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
