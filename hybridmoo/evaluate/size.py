"""Size in bytes of a network as it is deployed: the weights its deployable ONNX model stores.

The deployable model (:mod:`hybridmoo.evaluate.onnx`) is ``model.int8.onnx`` when some layer
quantizes its input to 8 bits (onnxruntime's static QDQ INT8, run by int8 kernels), else the
float ``model.onnx``. :func:`size_bytes` counts the bytes of that model's initializers:

- a layer run as an int8 kernel (a FakeQuant with 8-bit inputs): 1 byte per weight, for 4-bit
  and 8-bit weights alike (onnxruntime has no fast 4-bit convolution, so the 4-bit values are
  stored as int8), plus a float32 scale and an int8 zero point per output channel; its bias
  (the layer's own or a folded BatchNorm's) as int32 values with a float32 scale and an int32
  zero point per channel, except after a MatMul (a Linear on more than 2-D input) where the
  bias is a float Add; and a float32 scale and int8 zero point for each distinct tensor the
  int8 layers read or write;
- every other layer's weights and biases, whatever its ``w_bits`` (the fake-quantized values
  are stored as float32: with a float input there is no int8 kernel to run them), and every
  other floating-point parameter and buffer: 4 bytes per value;
- a BatchNorm that directly follows a convolution is folded into it (the exporter's
  constant folding): it stores nothing, and gives the convolution a bias if it had none;
- not stored: integer buffers (BatchNorm's ``num_batches_tracked``) and the FakeQuant input
  ranges (they become the scales and zero points above).

One forward pass on an example input finds the folded BatchNorms and the tensors the int8
layers read and write (a tensor is one value: the same object at the same version counter).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import FakeQuant

FLOAT_BYTES = 4
INT8_WEIGHT_BYTES = 1  # a 4-bit or 8-bit weight of an int8 layer
CHANNEL_QPARAM_BYTES = 5  # per output channel of an int8 layer: float32 scale + int8 zero point
INT32_BIAS_BYTES = 12  # per channel: int32 value + float32 scale + int32 zero point
TENSOR_QPARAM_BYTES = 5  # per quantized activation tensor: float32 scale + int8 zero point
_BN = nn.modules.batchnorm._BatchNorm
_Key = tuple[int, int]


@dataclass
class TracedLayer:
    """One Conv2d / Linear as the forward pass met it."""

    layer: nn.Conv2d | nn.Linear
    int8: bool
    add_bias: bool  # a Linear on other than 2-D input: MatMul, then its bias in a float Add
    inp: _Key
    out: _Key
    bn: nn.Module | None = None


def size_bytes(net: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the weights the deployable ONNX model of ``net`` stores (see the module
    docstring); ``example`` is an input batch (its first item is run once)."""
    layers = trace_layers(net, example)
    done = {id(m.act_range) for m in net.modules() if isinstance(m, FakeQuant)}  # not stored
    total = 0
    quantized: set[_Key] = set()
    for r in layers:
        if id(r.layer.weight) in done:  # a layer run twice stores its weights once
            continue
        counted = [r.layer.weight, r.layer.bias]
        if r.bn is not None:
            counted += [*r.bn.parameters(), *r.bn.buffers()]
        done |= {id(t) for t in counted if t is not None}
        per_weight, per_channel = layer_bytes(r)
        total += per_weight * r.layer.weight.numel() + per_channel * int(r.layer.weight.shape[0])
        if r.int8:
            quantized |= {r.inp, r.out}
    for t in (*net.parameters(), *net.buffers()):
        if id(t) in done or not t.is_floating_point():
            continue
        done.add(id(t))
        total += FLOAT_BYTES * t.numel()
    return total + TENSOR_QPARAM_BYTES * len(quantized)


def layer_bytes(r: TracedLayer) -> tuple[int, int]:
    """Bytes per weight and per output channel (its quantization parameters and bias) that
    the deployable model stores for the traced layer ``r``."""
    bias = r.layer.bias is not None or r.bn is not None
    if not r.int8:
        return FLOAT_BYTES, FLOAT_BYTES if bias else 0
    bias_bytes = (FLOAT_BYTES if r.add_bias else INT32_BIAS_BYTES) if bias else 0
    return INT8_WEIGHT_BYTES, CHANNEL_QPARAM_BYTES + bias_bytes


def trace_layers(net: nn.Module, example: torch.Tensor) -> list[TracedLayer]:
    """Every Conv2d / Linear of ``net`` run by one forward pass of ``example[:1]``, with the
    BatchNorm folded into it and the tensors it reads and writes."""
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or len(example) == 0:
        raise ConfigError("size_bytes needs an example input batch (a tensor)")
    wrapped = {id(m.layer) for m in net.modules() if isinstance(m, FakeQuant)}
    layers: list[TracedLayer] = []
    outputs: dict[_Key, TracedLayer] = {}
    keep: list[torch.Tensor] = []  # holds every traced tensor, so no id is reused

    def key(t: torch.Tensor) -> _Key:
        keep.append(t)
        return id(t), t._version

    def on_layer(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        layer = module.layer if isinstance(module, FakeQuant) else module
        x = args[0]
        add_bias = isinstance(layer, nn.Linear) and x.dim() != 2 and layer.bias is not None
        int8 = isinstance(module, FakeQuant) and module.a_bits == 8
        # with an Add after it, the MatMul's output is a tensor of its own
        record = TracedLayer(layer, int8, add_bias, key(x),
                        (id(module), -1) if add_bias else key(out))
        layers.append(record)
        if isinstance(layer, nn.Conv2d):
            outputs[record.out] = record

    def on_norm_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        conv = outputs.pop(key(args[0]), None)
        if conv is not None:
            conv.bn = module
            folded[id(module)] = conv

    def on_normalized(module: nn.Module, x: torch.Tensor) -> None:
        conv = folded.pop(id(module), None)
        if conv is not None:
            conv.out = key(x)

    folded: dict[int, TracedLayer] = {}
    hooks = []
    for m in net.modules():
        if isinstance(m, FakeQuant) or (isinstance(m, nn.Conv2d | nn.Linear)
                                        and id(m) not in wrapped):
            hooks.append(m.register_forward_hook(on_layer))
        elif isinstance(m, _BN):
            hooks.append(m.register_forward_pre_hook(on_norm_input))
            # timm's BatchNormAct2d runs its children (drop, act) on the normalized tensor
            first = next(iter(m.children()), None)
            if first is None:
                hooks.append(m.register_forward_hook(lambda mod, a, out: on_normalized(mod, out)))
            else:
                hooks.append(first.register_forward_pre_hook(
                    lambda _, a, bn=m: on_normalized(bn, a[0])))
    try:
        with _normal_tensors(), _eval(net):
            net(example[:1].to(_device(net)).clone())
    finally:
        for h in hooks:
            h.remove()
    return layers


@contextmanager
def _normal_tensors() -> Iterator[None]:
    """No autograd, outside inference mode (inference tensors have no version counter)."""
    with torch.inference_mode(False), torch.no_grad():
        yield


@contextmanager
def _eval(net: nn.Module) -> Iterator[None]:
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def _device(net: nn.Module) -> torch.device:
    for t in (*net.parameters(), *net.buffers()):
        return t.device
    return torch.device("cpu")
