"""One Pareto point as a self-describing directory::

    model.safetensors   the weights (a state dict; load with hybridmoo.load_subnet)
    model.onnx          FP32 ONNX
    model.int8.onnx     onnxruntime static QDQ INT8, when the network quantizes activations
                        (4/8-bit weights alone are baked into model.onnx)
    manifest.json       architecture config, quantization policy, metrics with units, the
                        device they were measured on, library versions, lineage, structure,
                        and the SHA-256 of every file (and of itself)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.export.files import write_manifest
from hybridmoo.export.network import FORMAT, WEIGHTS, write_weights
from hybridmoo.export.structure import describe

ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
PACKAGES = ("hybridmoo", "torch", "timm", "torch-pruning", "onnx", "onnxruntime", "safetensors")


def export_point(net: nn.Module, directory: str | os.PathLike[str], *,
                 config: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]],
                 lineage: Mapping[str, Any], example: torch.Tensor,
                 calibration: Sequence[torch.Tensor] | None, device_name: str,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Export ``net`` to ``directory`` (see the module docstring); returns the manifest path.

    ``metrics`` maps each name to ``{"value": number, "unit": str}`` (as measured on
    ``device_name``); ``example`` is an input batch fixing the ONNX input shape;
    ``calibration`` (input batches) is required when ``net`` quantizes activations (its INT8
    model's output ranges). ``net`` is put in eval mode."""
    from hybridmoo.evaluate.onnx import export_onnx, int8_layers, quantize_int8

    directory = Path(directory)
    checked = _metrics(metrics)
    if not isinstance(example, torch.Tensor):
        raise ConfigError(f"example must be an input tensor, got {type(example).__name__}")
    int8 = bool(int8_layers(net))  # weight-only quantization stays in the FP32 file
    if int8 and not calibration:
        raise ConfigError("this network quantizes activations: export_point needs "
                          "calibration batches for its INT8 ONNX model")
    directory.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    structure = describe(net)
    write_weights(net, directory / WEIGHTS, structure["architecture"])
    files = [WEIGHTS, ONNX_FP32]
    export_onnx(net, example.cpu(), directory / ONNX_FP32)  # both write temp files + rename
    if int8:
        batches = [x.cpu() for x in calibration or ()]
        quantize_int8(net, directory / ONNX_FP32, directory / ONNX_INT8, batches)
        files.append(ONNX_INT8)
    else:
        (directory / ONNX_INT8).unlink(missing_ok=True)  # left by an earlier export
    body = {
        "format": FORMAT, "kind": "export", "architecture": structure["architecture"],
        "config": _plain(config, "config"),
        "quantization": {"layers": structure["quant"], "int8_onnx": ONNX_INT8 if int8 else None},
        "metrics": checked, "device": str(device_name), "versions": versions(),
        "lineage": _plain(lineage, "lineage"),
        "input": {"shape": [int(s) for s in example.shape], "dtype": str(example.dtype)},
        "structure": structure, "weights": WEIGHTS,
        "onnx": {"fp32": ONNX_FP32, "int8": ONNX_INT8 if int8 else None},
        "extra": _plain(extra or {}, "extra"),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return write_manifest(directory, body, files)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries an exported network depends on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _metrics(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"metrics must be a mapping, got {type(metrics).__name__}")
    out = {}
    for name, m in metrics.items():
        if not isinstance(m, Mapping) or not {"value", "unit"} <= set(m):
            raise ConfigError(f"metric {name!r} must be {{'value': number, 'unit': str}}, "
                              f"got {m!r}")
        value = m["value"]
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) \
                or not math.isfinite(float(value)):
            raise ConfigError(f"metric {name!r}: value must be a finite number, got {value!r}")
        out[str(name)] = {**_plain(m, f"metric {name!r}"), "value": float(value),
                          "unit": str(m["unit"])}
    return out


def _plain(value: Any, what: str) -> Any:
    """``value`` as plain JSON data (numpy scalars become numbers)."""
    def default(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        raise TypeError(f"{type(v).__name__} is not JSON data")

    try:
        return json.loads(json.dumps(value, default=default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
