"""ONNX export of extracted networks and their INT8 (static QDQ) version for onnxruntime.

``export_onnx`` writes one self-contained FP32 file (TorchScript exporter: fast, folds
BatchNorm into the convolutions, node names follow module paths, dynamic batch axis). A
:class:`~hybridmoo.quant.FakeQuant` layer is exported as its float layer with the
fake-quantized weights baked in; activations stay float.

``quantize_int8`` runs onnxruntime's ``quantize_static`` (QDQ, int8 activations and weights,
per-channel symmetric weights, MinMax calibration) on exactly the Conv/Gemm/MatMul nodes of the
layers whose FakeQuant quantizes the *input* to 8 bits (layers with FP32 inputs stay float, with
their baked weights). The result follows :mod:`hybridmoo.quant.fake` as closely as onnxruntime
allows:

- each quantized node's input uses the FakeQuant's calibrated range (a ``TensorQuantOverrides``
  scale and zero point), so input rounding is the same;
- 4- and 8-bit weights keep their grid: the per-channel scale is overridden to
  ``absmax / qmax(bits)`` of the (BatchNorm-folded) baked weight, so a 4-bit weight is stored
  exactly as an int8 value in [-7, 7] (int8 QDQ of 4-bit-rounded weights: the int8 kernel
  computes with the 4-bit numbers; onnxruntime has no faster 4-bit convolution);
- layers with 32-bit weights but 8-bit inputs get onnxruntime's own 8-bit per-channel weights
  (there is no int8-activation x float-weight kernel);
- unlike FakeQuant, onnxruntime also quantizes each quantized node's output (calibrated on
  ``calibration``), so that it can run the fused int8 kernel (QLinearConv) that would be
  deployed, and every consumer of a quantized tensor (e.g. a residual Add) reads the quantized
  value; the folded BatchNorm bias is int32-rounded. These add a few roundings per quantized
  layer (tests/evaluate bound the difference to the FakeQuant network).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import FakeQuant, act_qparams, fake_quant_weight, weight_qmax

OPSET = 17
INPUT, OUTPUT = "input", "output"
FP32 = 32
_MATMUL_OPS = ("Conv", "Gemm", "MatMul")


def quantizes(net: nn.Module) -> bool:
    """True when any FakeQuant layer of ``net`` quantizes its weights or inputs."""
    return any(isinstance(m, FakeQuant) and min(m.w_bits, m.a_bits) < FP32
               for m in net.modules())


def int8_layers(net: nn.Module) -> dict[str, FakeQuant]:
    """The FakeQuant layers (by module name) whose input is quantized to 8 bits: the nodes
    :func:`quantize_int8` runs as int8 kernels."""
    return {name: m for name, m in net.named_modules()
            if isinstance(m, FakeQuant) and m.a_bits == 8}


def to_float(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with each FakeQuant replaced by its layer holding the fake-quantized
    weights (activations float): what the FP32 ONNX file computes."""
    out = copy.deepcopy(net)
    wrapped = [(name, m) for name, m in out.named_modules() if isinstance(m, FakeQuant)]
    with torch.no_grad():
        for name, fq in wrapped:
            layer = fq.layer
            if fq.w_bits < FP32:
                layer.weight.copy_(fake_quant_weight(layer.weight, fq.w_bits))
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, child, layer)
    return out


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``net`` (in eval mode, on CPU) as one FP32 ONNX file with a dynamic batch axis;
    written to a temporary name and renamed, so ``path`` is never half-written."""
    path = Path(path)
    model = to_float(net).cpu().eval()
    x = example.detach().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                              do_constant_folding=True, external_data=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def quantize_int8(net: nn.Module, fp32_path: Path, out_path: Path,
                  calibration: Sequence[torch.Tensor]) -> Path:
    """Static QDQ INT8 version of ``fp32_path`` (written by :func:`export_onnx` from ``net``)
    quantizing the nodes of :func:`int8_layers` (see the module docstring); ``calibration``
    holds input batches for the output ranges. Returns ``out_path`` (written atomically)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    layers = int8_layers(net)
    if not layers:
        raise ConfigError("the network quantizes no layer input to 8 bits: nothing to "
                          "run as INT8")
    batches = [_numpy(x) for x in calibration]
    if not batches:
        raise ConfigError("INT8 quantization needs at least one calibration batch")
    model = onnx.load(str(fp32_path))
    _unalias_weights(model)
    nodes = _layer_nodes(model, list(layers))
    inits = {i.name: i for i in model.graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, node in nodes.items():
        fq = layers[name]
        if not torch.isnan(fq.act_range).any():
            scale, zp = act_qparams(fq.act_range[0], fq.act_range[1])
            overrides[node.input[0]] = [{"scale": np.array(float(scale), np.float32),
                                          "zero_point": np.array(int(zp), np.int8)}]
        if fq.w_bits < FP32:
            overrides[node.input[1]] = _weight_overrides(node, inits[node.input[1]], fq.w_bits)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {model.graph.input[0].name: x}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(out_path)
    root = logging.getLogger()
    root.addFilter(_no_preprocess_advice)
    try:
        quantize_static(
            model, str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(_MATMUL_OPS),
            nodes_to_quantize=[n.name for n in nodes.values()],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           "TensorQuantOverrides": overrides,
                           "QDQDisableWeightAdjustForInt32Bias": True,
                           "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}})
        os.replace(tmp, out_path)
    finally:
        root.removeFilter(_no_preprocess_advice)
        tmp.unlink(missing_ok=True)
    return out_path


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop quantize_static's advice to run its shape-inference pre-processing, logged on the
    root logger for every call (our exported graphs already carry shapes)."""
    return "pre-process" not in record.getMessage()


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session for ``path`` running on ``threads`` threads, sequentially."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConfigError(f"onnxruntime cannot load {path}: {exc}") from None


def run_onnx(session_or_path: Any, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """The first output of the model (a session or a file path) for the input batch ``x``."""
    session = (onnx_session(Path(session_or_path))
               if isinstance(session_or_path, str | Path) else session_or_path)
    name = session.get_inputs()[0].name
    return session.run(None, {name: _numpy(x)})[0]


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _tmp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _scope(name: str) -> str:
    """The TorchScript exporter's node scope of module ``name``: "a.0.b" -> "/a/a.0/b",
    "a.0.0.b" -> "/a/a.0/a.0.0/b" (an index extends its container's component)."""
    scope: list[str] = []
    for part in name.split("."):
        scope.append(f"{scope[-1]}.{part}" if part.isdigit() and scope else part)
    return "/" + "/".join(scope)


def _layer_nodes(model: Any, layers: list[str]) -> dict[str, Any]:
    """The one Conv/Gemm/MatMul node with a constant weight that each layer exported to."""
    consts = {i.name for i in model.graph.initializer}
    found: dict[str, Any] = {}
    for name in layers:
        prefix = _scope(name) + "/"
        matches = [n for n in model.graph.node if n.op_type in _MATMUL_OPS
                   and n.name.startswith(prefix) and "/" not in n.name[len(prefix):]
                   and len(n.input) > 1 and n.input[1] in consts]
        if len(matches) != 1:
            raise ConfigError(f"cannot find the ONNX node of layer {name!r} "
                              f"({len(matches)} candidates under {prefix!r})")
        found[name] = matches[0]
    return found


def _unalias_weights(model: Any) -> None:
    """Give every weight its own initializer: the exporter deduplicates equal constants (e.g.
    all-zero folded weights) through Identity nodes, which quantization cannot follow."""
    inits = {i.name: i for i in model.graph.initializer}
    aliases = [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    for node in aliases:
        copy_ = copy.deepcopy(inits[node.input[0]])
        copy_.name = node.output[0]
        model.graph.initializer.append(copy_)
        model.graph.node.remove(node)


def _weight_overrides(node: Any, weight: Any, bits: int) -> list[dict[str, Any]]:
    from onnx import numpy_helper

    w = numpy_helper.to_array(weight)
    axis = 1 if node.op_type == "MatMul" else 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        axis = 0 if trans_b else 1
    absmax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    scales = (absmax.astype(np.float64) / weight_qmax(bits)).astype(np.float32)
    scales[scales < np.finfo(np.float32).tiny] = 1.0
    return [{"axis": axis, "scale": np.array(s, np.float32), "zero_point": np.array(0, np.int8)}
            for s in scales]
