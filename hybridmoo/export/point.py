"""One Pareto point as a self-describing directory::

    model.safetensors   the weights (a state dict; load with hybridmoo.load_subnet)
    model.onnx          the reference ONNX model: computes what the PyTorch network computes
                        (fake-quantized weights as float, the inputs of layers that quantize
                        them fake-quantized; hybridmoo.evaluate.onnx); the deployable model of
                        a network without int8 layers
    model.int8.onnx     onnxruntime static QDQ INT8, the deployable model of a network with
                        a layer that quantizes its input to 8 bits
    manifest.json       architecture config, quantization policy, metrics with units, the
                        device they were measured on, library versions, lineage, structure,
                        the deployable file and the bytes of its weights (``size_bytes``),
                        each file's role, size in bytes and SHA-256 (and its own SHA-256)
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

ONNX_REFERENCE = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
WEIGHTS_ROLE = "weights: the PyTorch state dict (hybridmoo.load_subnet)"
REFERENCE_ROLE = "reference: ONNX computing what the PyTorch network computes"
FLOAT_ROLE = "deployable and reference: float ONNX computing what the PyTorch network computes"
INT8_ROLE = "deployable: onnxruntime static QDQ INT8 (int8 kernels)"
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
    from hybridmoo.evaluate.size import size_bytes

    directory = Path(directory)
    checked = _metrics(metrics)
    if not isinstance(example, torch.Tensor):
        raise ConfigError(f"example must be an input tensor, got {type(example).__name__}")
    int8 = bool(int8_layers(net))  # weight-only quantization stays in the float model
    if int8 and not calibration:
        raise ConfigError("this network quantizes activations: export_point needs "
                          "calibration batches for its INT8 ONNX model")
    directory.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    structure = describe(net)
    write_weights(net, directory / WEIGHTS, structure["architecture"])
    export_onnx(net, example.cpu(), directory / ONNX_REFERENCE)  # both write temp + rename
    if int8:
        batches = [x.cpu() for x in calibration or ()]
        quantize_int8(net, example.cpu(), directory / ONNX_INT8, batches)
        roles = {WEIGHTS: WEIGHTS_ROLE, ONNX_REFERENCE: REFERENCE_ROLE, ONNX_INT8: INT8_ROLE}
    else:
        roles = {WEIGHTS: WEIGHTS_ROLE, ONNX_REFERENCE: FLOAT_ROLE}
        (directory / ONNX_INT8).unlink(missing_ok=True)  # left by an earlier export
    body = {
        "format": FORMAT, "kind": "export", "architecture": structure["architecture"],
        "config": _plain(config, "config"),
        "quantization": {"layers": structure["quant"]},
        "metrics": checked, "device": str(device_name), "versions": versions(),
        "lineage": _plain(lineage, "lineage"),
        "input": {"shape": [int(s) for s in example.shape], "dtype": str(example.dtype)},
        "structure": structure, "weights": WEIGHTS,
        "deployable": ONNX_INT8 if int8 else ONNX_REFERENCE,
        "deployable_weight_bytes": size_bytes(net, example),
        "roles": roles,
        "extra": _plain(extra or {}, "extra"),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return write_manifest(directory, body, list(roles))


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
