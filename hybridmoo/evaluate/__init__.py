"""Evaluation of supernet candidates: accuracy, latency (measured on the device, INT8 through
onnxruntime on the CPU), size and MACs; latency models fitted by ``profile``.

Importing this package imports torch, timm and torch-pruning; ``import hybridmoo`` does not.
"""

from hybridmoo.evaluate.evaluator import OBJECTIVES, SubnetEvaluator
from hybridmoo.evaluate.latency import RUNTIMES, latency_kind, network_latency
from hybridmoo.evaluate.latency_model import (
    LatencyModel,
    LayerCost,
    layer_costs,
    supernet_fingerprint,
)
from hybridmoo.evaluate.measure import (
    LatencyStats,
    count_macs,
    device_name,
    measure_latency,
    measure_onnx_latency,
    resolve_device,
    size_bytes,
)
from hybridmoo.evaluate.onnx import (
    export_onnx,
    int8_layers,
    onnx_session,
    quantize_int8,
    quantizes,
    run_onnx,
    to_float,
)
from hybridmoo.evaluate.profiling import ProfileResult, kendall_tau, profile

__all__ = [
    "OBJECTIVES", "RUNTIMES", "LatencyModel", "LatencyStats", "LayerCost", "ProfileResult",
    "SubnetEvaluator", "count_macs", "device_name", "export_onnx", "int8_layers", "kendall_tau",
    "latency_kind", "layer_costs", "measure_latency", "measure_onnx_latency", "network_latency",
    "onnx_session", "profile", "quantize_int8", "quantizes", "resolve_device", "run_onnx",
    "size_bytes", "supernet_fingerprint", "to_float",
]
