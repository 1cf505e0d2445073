"""The evaluator of supernet candidates: accuracy, latency, size and MACs of the extracted
sub-network (an architecture plus a quantization policy).

Per candidate: extract the sub-network and recalibrate its BatchNorm statistics (and FakeQuant
input ranges) on ``bn_batches`` training batches (``bn_recal_s``); top-1 accuracy on the
held-out ``split`` (``eval_s``); latency on the evaluator's device as the network would be
deployed (see :mod:`hybridmoo.evaluate.latency`), or predicted by a :class:`LatencyModel`;
size in bytes (the weights of the deployable ONNX model, :mod:`hybridmoo.evaluate.size`) and
MACs per image. The evaluator pickles (for Ray actors); what it builds for
evaluating (calibration batches, the latency input) is rebuilt lazily after unpickling.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hybridmoo.data import as_image_data, eval_batches
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency import check_runtime, network_latency
from hybridmoo.evaluate.latency_model import LatencyModel, supernet_fingerprint
from hybridmoo.evaluate.measure import (
    count_macs,
    device_name,
    resolve_device,
    size_bytes,
    torch_threads,
)
from hybridmoo.evaluation_settings import SPLITS, EvaluationSettings
from hybridmoo.objectives import Objective
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.training import accuracy, calibration_batches, prepare_subnet

OBJECTIVES = (Objective("accuracy", "max", "%"), Objective("latency_ms", "min", "ms"),
              Objective("size_bytes", "min", "B"))
_LAZY = ("_calib", "_example", "_device", "_device_name", "_calibrated")


class SubnetEvaluator:
    """``evaluator(config) -> {"accuracy": %, "latency_ms": ms, "size_bytes": B, "macs": ...,
    info}`` for configs of ``supernet.space``; ``objectives`` lists the three objectives with
    their units. ``latency`` is "measure" or a :class:`LatencyModel` of this supernet (its
    prediction replaces the measurement). Accuracy equals
    :func:`hybridmoo.supernet.evaluate_subnet` with ``batch_size``, ``bn_batches`` and ``seed``
    as the training config's ``batch_size``, ``calib_batches`` and ``seed`` (in percent).
    ``data``: an :class:`~hybridmoo.data.ImageData`, or train / val / test Datasets or
    DataLoaders (:func:`hybridmoo.data.as_image_data`, with the supernet's classes; images of
    a fixed-size model must have its ``image_size``); with a Ray backend it travels to the
    actors by pickle."""

    def __init__(self, supernet: Supernet, data: Any, *, device: str = "cpu",
                 batch_size: int = 64, eval_batch_size: int = 256, latency_batch: int = 1,
                 repeats: int = 20, warmup: int = 3, bn_batches: int = 4, split: str = "val",
                 latency: str | LatencyModel = "measure", runtime: str = "auto",
                 threads: int = 1, seed: int = 0) -> None:
        if not isinstance(supernet, Supernet):
            raise ConfigError(f"SubnetEvaluator needs a Supernet, got {type(supernet).__name__}")
        data = as_image_data(data, num_classes=getattr(supernet.model, "num_classes", None),
                             image_size=supernet.image_size if supernet.fixed_size else None)
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        for name, value, low in (("batch_size", batch_size, 1), ("eval_batch_size",
                                 eval_batch_size, 1), ("latency_batch", latency_batch, 1),
                                 ("repeats", repeats, 1), ("warmup", warmup, 0),
                                 ("bn_batches", bn_batches, 1), ("threads", threads, 1),
                                 ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(latency, LatencyModel):
            latency.check(supernet_fingerprint(supernet))
        elif latency != "measure":
            raise ConfigError(f"latency must be 'measure' or a LatencyModel, got {latency!r}")
        resolve_device(device)  # a clear error now rather than in every evaluation
        self.supernet = supernet
        self.data = data
        self.device = str(device)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.latency_batch, self.repeats, self.warmup = latency_batch, repeats, warmup
        self.bn_batches, self.split, self.seed = bn_batches, split, seed
        self.latency, self.runtime, self.threads = latency, check_runtime(runtime), threads
        self._reset()

    @classmethod
    def from_settings(cls, supernet: Supernet, data: Any, settings: EvaluationSettings,
                      *, latency: str | LatencyModel = "measure", train: Any = None,
                      seed: int = 0) -> SubnetEvaluator:
        """The evaluator ``settings`` describe (``device`` None: cpu); recalibration batches
        and the seed default to the training config ``train``'s (``batch_size``,
        ``calib_batches``, ``seed``)."""
        s = settings
        return cls(supernet, data, device=s.device or "cpu",
                   batch_size=s.batch_size or getattr(train, "batch_size", 64),
                   eval_batch_size=s.eval_batch_size, latency_batch=s.latency_batch,
                   repeats=s.repeats, warmup=s.warmup,
                   bn_batches=s.bn_batches or getattr(train, "calib_batches", 4),
                   split=s.split, latency=latency, runtime=s.runtime, threads=s.threads,
                   seed=getattr(train, "seed", seed))

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """accuracy (max, %), latency_ms (min, ms), size_bytes (min, B)."""
        return OBJECTIVES

    def __call__(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate sub-network ``config`` (see the module docstring)."""
        start = time.perf_counter()
        net = self.prepare(config)
        bn_recal_s = time.perf_counter() - start
        out = self.measure_network(net)
        out["bn_recal_s"] = bn_recal_s
        return out

    def prepare(self, config: Mapping[str, Any]) -> nn.Module:
        """Sub-network ``config`` extracted, recalibrated (BatchNorm statistics, then FakeQuant
        input ranges) and on the evaluator's device: what ``__call__`` measures."""
        self._build()
        with torch_threads(self.threads):
            net = prepare_subnet(self.supernet, config, self._calib, calibrate_supernet=False)
        return net.to(self._device).eval()

    def measure_network(self, net: nn.Module) -> dict[str, Any]:
        """Accuracy, latency, size and MACs of an already built network (e.g. a refined,
        physically pruned one), measured as for a candidate, without BatchNorm
        recalibration."""
        self._build()
        with torch_threads(self.threads):
            net = net.to(self._device).eval()
            start = time.perf_counter()
            acc = accuracy(net, getattr(self.data, self.split), self.eval_batch_size)
            eval_s = time.perf_counter() - start
            start = time.perf_counter()
            out = self._latency(net)
            out["latency_s"] = time.perf_counter() - start
            example = self._example[:1]
            out.update({
                "accuracy": 100.0 * acc, "size_bytes": float(size_bytes(net, example)),
                "macs": float(count_macs(net, example)), "eval_s": eval_s,
                "device": self._device_name, "latency_batch": self.latency_batch})
        return out

    def _latency(self, net: nn.Module) -> dict[str, Any]:
        if isinstance(self.latency, LatencyModel):
            from hybridmoo.evaluate.latency_model import layer_costs

            costs = layer_costs(net, self._example[:1])
            kind = self.latency.kind_for(costs)
            return {"latency_ms": float(self.latency.predict_from_layers(costs, kind)),
                    "latency_kind": f"predicted-{kind}", "latency_cv": None}
        calib = [x for x, _ in self._calib[:1]]  # INT8 output ranges; latency does not need more
        stats, kind = network_latency(net, self._example, device=self._device,
                                      runtime=self.runtime, calibration=calib,
                                      warmup=self.warmup, repeats=self.repeats,
                                      threads=self.threads)
        return {"latency_ms": stats.median_ms, "latency_kind": kind, "latency_cv": stats.cv}

    def _build(self) -> None:
        if self._calibrated:
            return
        self._device = resolve_device(self.device)
        self._device_name = device_name(self._device)
        self.supernet.to(self._device)
        self._calib = calibration_batches(self.data, self.batch_size, self.seed, self.bn_batches)
        if not self._calib:
            raise ConfigError(f"no training batch of {self.batch_size} examples for BatchNorm "
                              "recalibration")
        x, _ = next(eval_batches(getattr(self.data, self.split), self.latency_batch))
        if len(x) < self.latency_batch:
            raise ConfigError(f"the {self.split} split has fewer than latency_batch="
                              f"{self.latency_batch} examples")
        self._example = x.to(self._device)
        if any(name.endswith("a_bits") for name in self.supernet.space.names):
            self.supernet.calibrate(self._calib)  # ranges extraction of quantized configs needs
        self._calibrated = True

    def _reset(self) -> None:
        self._calib: list[Any] = []
        self._example = torch.empty(0)
        self._device = torch.device("cpu")
        self._device_name = ""
        self._calibrated = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _LAZY}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()
