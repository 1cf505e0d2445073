"""Latency of an extracted network as it would be deployed: the runtime that runs it and the
measurement on the worker's device.

``runtime="auto"`` (the default): on the CPU a network with 8-bit inputs to some layer runs as
onnxruntime's static QDQ INT8 model (the int8 kernels), every other network as the float
torch module (FakeQuant weights baked in: fake activation rounding is an emulation, not a
deployed kernel). ``"onnxruntime"``: every network on the CPU through onnxruntime (FP32 or
INT8), which compares FP32 and INT8 candidates on one runtime. ``"torch"``: always the float
torch module. GPUs always run the float torch module.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.measure import LatencyStats, measure_latency, measure_onnx_latency
from hybridmoo.evaluate.onnx import export_onnx, int8_layers, quantize_int8, to_float
from hybridmoo.evaluation_settings import RUNTIMES

TORCH, ORT_FP32, ORT_INT8 = "torch", "onnxruntime-fp32", "onnxruntime-int8"
LATENCY_KINDS = (TORCH, ORT_FP32, ORT_INT8)


def check_runtime(runtime: str) -> str:
    """``runtime`` when it is one of :data:`RUNTIMES`, else ConfigError."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def latency_kind(net: nn.Module, device: torch.device, runtime: str = "auto") -> str:
    """Which runtime measures ``net``: "torch", "onnxruntime-fp32" or "onnxruntime-int8"."""
    check_runtime(runtime)
    if device.type != "cpu" or runtime == "torch":
        return TORCH
    int8 = bool(int8_layers(net))
    if int8:
        return ORT_INT8
    return ORT_FP32 if runtime == "onnxruntime" else TORCH


def network_latency(net: nn.Module, example: torch.Tensor, *, device: torch.device,
                    runtime: str = "auto", calibration: Sequence[torch.Tensor] = (),
                    warmup: int = 3, repeats: int = 20, threads: int = 1
                    ) -> tuple[LatencyStats, str]:
    """Latency of ``net`` on ``example`` (its batch size) as :func:`latency_kind` says it is
    deployed, and that kind. ``calibration`` (input batches) is needed for INT8."""
    kind = latency_kind(net, device, runtime)
    if kind == TORCH:
        model = to_float(net).to(device).eval()
        return measure_latency(model, example.to(device), warmup=warmup, repeats=repeats,
                               threads=threads), kind
    if kind == ORT_INT8 and not calibration:
        raise ConfigError("measuring an INT8 network needs calibration batches")
    with tempfile.TemporaryDirectory(prefix="hybridmoo-latency-") as tmp:
        if kind == ORT_INT8:
            path = quantize_int8(net, example[:1], Path(tmp) / "model.int8.onnx", calibration)
        else:
            path = export_onnx(net, example[:1], Path(tmp) / "model.onnx")
        stats = measure_onnx_latency(path, example, warmup=warmup, repeats=repeats,
                                     threads=threads)
    return stats, kind
