"""ONNX export of extracted networks and their INT8 (static QDQ) version for onnxruntime.

Two models, each one self-contained file (TorchScript exporter: fast, folds BatchNorm into the
convolutions, node names follow module paths, dynamic batch axis, every weight in its own
initializer):

- ``export_onnx`` (``model.onnx``, the reference): computes what the PyTorch network computes.
  A :class:`~hybridmoo.quant.FakeQuant` layer is its float layer holding the fake-quantized
  weights (and int32-rounded bias), and a layer that quantizes its input to 8 bits gets that
  input's fake quantization (QuantizeLinear then DequantizeLinear) written out as float ops
  with its calibrated scale and zero point. Not as QuantizeLinear / DequantizeLinear nodes:
  onnxruntime rewrites a DequantizeLinear -> Conv -> QuantizeLinear chain with float weights
  into an int8 kernel (its WeightBiasQuantization optimization), which changes the outputs
  (on test_efficientnet every output). Its outputs differ from PyTorch's only by float
  rounding (the folded BatchNorm), which can move an activation across a rounding boundary
  (tests/export bound it).
- ``quantize_int8`` (``model.int8.onnx``): the deployable model of a network with int8
  layers (``model.onnx`` is the deployable model of any other network); its stored weight
  bytes are what :func:`hybridmoo.evaluate.size.size_bytes` counts.

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
  computes with the 4-bit numbers). Not packed as ONNX INT4: onnxruntime 1.32 fuses no int4
  convolution, it runs a float Conv on weights dequantized at every call, 3.5x slower than
  the int8 QLinearConv (a 64-channel 3x3 Conv on 32x32, one thread: 1.97 vs 0.56 ms);
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
import io
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
from hybridmoo.quant import (
    FakeQuant,
    act_qparams,
    fake_quant_bias,
    fake_quant_weight,
    weight_qmax,
    weight_scales,
)
from hybridmoo.quant.fake import ACT_QMAX, ACT_QMIN

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
    weights (and, where the input is quantized too, the int32-rounded bias): ``net`` with its
    activations left in float."""
    out = copy.deepcopy(net)
    wrapped = [(name, m) for name, m in out.named_modules() if isinstance(m, FakeQuant)]
    with torch.no_grad():
        for name, fq in wrapped:
            layer = fq.layer
            if fq.w_bits < FP32 and fq.a_bits < FP32 and layer.bias is not None:
                scale, _ = _input_qparams(name, fq)
                layer.bias.copy_(fake_quant_bias(layer.bias, scale,
                                                 weight_scales(layer.weight, fq.w_bits)))
            if fq.w_bits < FP32:
                layer.weight.copy_(fake_quant_weight(layer.weight, fq.w_bits))
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, child, layer)
    return out


def _input_qparams(name: str, fq: FakeQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of layer ``name``'s int8 input quantizer; ConfigError when it was
    never calibrated."""
    if torch.isnan(fq.act_range).any():
        raise ConfigError(f"layer {name!r} quantizes its input but was never calibrated: run "
                          "hybridmoo.quant.calibrate(net, batches) before exporting")
    return act_qparams(fq.act_range[0], fq.act_range[1])


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``net`` (in eval mode, on CPU) as one ONNX file with a dynamic batch axis that
    computes what ``net`` computes (the module docstring's reference model: float weights
    holding the fake-quantized values, the input of each layer of :func:`int8_layers`
    fake-quantized). Written to a temporary name and renamed, so ``path`` is never
    half-written."""
    model = _float_graph(net, example)
    _fake_quantize_inputs(model, net)
    return _save(model, Path(path))


def _float_graph(net: nn.Module, example: torch.Tensor) -> Any:
    """The ONNX model (an ``onnx.ModelProto``) of :func:`to_float` of ``net``: the
    TorchScript exporter's graph, BatchNorm folded into the convolutions, every weight in
    its own initializer."""
    import onnx

    model = to_float(net).cpu().eval()
    x = example.detach().cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          do_constant_folding=True, external_data=False)
    proto = onnx.load_from_string(buffer.getvalue())
    _unalias_weights(proto)
    return proto


def _save(model: Any, path: Path) -> Path:
    """Write the ONNX ``model`` to ``path`` through a temporary file and a rename."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fake_quantize_inputs(model: Any, net: nn.Module) -> None:
    """Fake-quantize the node input of each int8 layer of ``net`` in ``model``, in place, with
    the layer's calibrated scale and zero point, as :func:`hybridmoo.quant.fake_quant_act`
    computes it: ``(clip(round(x / s) + zp, -128, 127) - zp) * s`` in float ops (Div, Round,
    Add, Clip, Sub, Mul; ONNX's Round is half-to-even, like torch's)."""
    from onnx import helper, numpy_helper

    layers = int8_layers(net)
    if not layers:
        return
    nodes = _layer_nodes(model, list(layers))
    chains: dict[str, list[Any]] = {}
    for name, node in nodes.items():
        scale, zp = _input_qparams(name, layers[name])
        p = f"{node.name}_input"
        consts = {"scale": float(scale), "zero_point": float(zp), "qmin": float(ACT_QMIN),
                  "qmax": float(ACT_QMAX)}
        model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32),
                                                               f"{p}_{k}")
                                       for k, v in consts.items())
        steps = [("Div", [node.input[0], f"{p}_scale"]), ("Round", [f"{p}_Div"]),
                 ("Add", [f"{p}_Round", f"{p}_zero_point"]),
                 ("Clip", [f"{p}_Add", f"{p}_qmin", f"{p}_qmax"]),
                 ("Sub", [f"{p}_Clip", f"{p}_zero_point"]), ("Mul", [f"{p}_Sub", f"{p}_scale"])]
        chains[node.name] = [helper.make_node(op, inputs, [f"{p}_{op}"], name=f"{p}/{op}")
                             for op, inputs in steps]
        node.input[0] = f"{p}_Mul"
    ordered = []
    for node in model.graph.node:
        ordered += [*chains.get(node.name, []), node]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def quantize_int8(net: nn.Module, example: torch.Tensor, out_path: Path,
                  calibration: Sequence[torch.Tensor]) -> Path:
    """The static QDQ INT8 model of ``net`` exported on ``example`` (its float graph, the
    nodes of :func:`int8_layers` quantized, see the module docstring): the deployable model
    of a network with int8 layers. ``calibration`` holds input batches for the output
    ranges. Returns ``out_path`` (written atomically)."""
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
    model = _float_graph(net, example)
    nodes = _layer_nodes(model, list(layers))
    inits = {i.name: i for i in model.graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, node in nodes.items():
        fq = layers[name]
        scale, zp = _input_qparams(name, fq)
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
