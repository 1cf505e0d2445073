"""size_bytes: the bytes of the weights the deployable ONNX model stores, by hand and against
the initializers of exported models."""

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import export_onnx, int8_layers, quantize_int8, quantizes, size_bytes
from hybridmoo.quant import FakeQuant, calibrate
from hybridmoo.supernet import recalibrate_bn
from hybridmoo.testing.spaces import mixed_policy


def initializer_bytes(path):
    """What an ONNX file stores for its weights: the bytes of its initializers."""
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def deployable(net, x, calib, directory):
    """The deployable ONNX model of ``net``: INT8 when it has int8 layers, else float."""
    if int8_layers(net):
        return quantize_int8(net, x[:1], directory / "model.int8.onnx", calib)
    return export_onnx(net, x[:1], directory / "model.onnx")


def _conv_bn(w_bits, a_bits, *, relu_between=False):
    torch.manual_seed(0)
    layers = [FakeQuant(nn.Conv2d(4, 8, 3), w_bits, a_bits), nn.BatchNorm2d(8)]
    if relu_between:
        layers.insert(1, nn.ReLU())
    net = nn.Sequential(*layers).eval()
    x = torch.randn(4, 4, 6, 6)
    if a_bits == 8:
        calibrate(net, [x])
    return net, x


def test_size_by_hand(tmp_path):
    # 8 output channels, 288 weights. An int8 layer: 288 int8 weights, a float32 scale and an
    # int8 zero point per channel (8 * 5), its bias (its own with the folded BatchNorm's) as
    # int32 + float32 scale + int32 zero point (8 * 12), and a scale + zero point for its
    # input and its output tensor (2 * 5); the folded BatchNorm stores nothing
    int8 = 288 + 8 * 5 + 8 * 12 + 2 * 5
    net, x = _conv_bn(4, 8)
    assert size_bytes(net, x) == int8
    assert size_bytes(_conv_bn(8, 8)[0], x) == int8  # 4-bit weights are stored as int8
    # a float input: no int8 kernel, the fake-quantized 4-bit weights are stored as float32
    assert size_bytes(_conv_bn(4, 32)[0], x) == 4 * (288 + 8)
    # a BatchNorm that does not follow the convolution stays: 4 floats per channel
    assert size_bytes(_conv_bn(4, 8, relu_between=True)[0], x) == int8 + 4 * 4 * 8
    for w_bits, a_bits, relu in ((4, 8, False), (4, 32, False), (8, 8, True)):
        net, x = _conv_bn(w_bits, a_bits, relu_between=relu)
        path = deployable(net, x, [x], tmp_path / f"{w_bits}-{a_bits}-{relu}")
        assert size_bytes(net, x) == initializer_bytes(path)


def test_a_tensor_changed_in_place_is_a_new_tensor(tmp_path):
    """conv1 -> BN -> in-place ReLU -> conv2: the ReLU's output is a tensor of its own in ONNX
    (conv1's output and conv2's input both get a scale and a zero point)."""
    torch.manual_seed(0)
    net = nn.Sequential(FakeQuant(nn.Conv2d(3, 8, 3), 8, 8), nn.BatchNorm2d(8),
                        nn.ReLU(inplace=True), FakeQuant(nn.Conv2d(8, 4, 1, bias=False), 4, 8))
    x = torch.randn(4, 3, 8, 8)
    calibrate(net.eval(), [x])
    conv1 = 8 * 27 + 8 * 5 + 8 * 12
    conv2 = 32 + 4 * 5  # no bias
    assert size_bytes(net, x) == conv1 + conv2 + 4 * 5
    assert size_bytes(net, x) == initializer_bytes(deployable(net, x, [x], tmp_path))


def _prepared(sn, config, calib):
    net = sn.extract(config)
    recalibrate_bn(net, calib)
    if quantizes(net):
        calibrate(net, calib)
    return net.eval()


@pytest.mark.parametrize("policy", ["fp32", "w4-a32", "w4-a8", "w8-a8", "mixed"])
def test_size_is_the_deployable_models_weight_bytes(supernet, quantized, calib, data, tmp_path,
                                                    policy):
    configs = {"fp32": supernet.largest(), "w4-a32": quantized(4, 32),
               "w4-a8": quantized(4, 8), "w8-a8": quantized(8, 8),
               "mixed": mixed_policy(supernet.largest())}
    net = _prepared(supernet, configs[policy], calib)
    x = data.val.tensors[0][:4]
    assert size_bytes(net, x) == initializer_bytes(deployable(net, x, calib, tmp_path))


def test_size_follows_storage_not_bits(supernet, quantized, calib, widths):
    size = {(w, a): size_bytes(_prepared(supernet, quantized(w, a), calib), calib[0])
            for w, a in ((4, 8), (8, 8), (4, 32), (32, 32))}
    assert size[4, 8] == size[8, 8] < size[4, 32] == size[32, 32]
    x = calib[0]
    assert size_bytes(supernet.extract(widths(0.5)), x) < size_bytes(
        supernet.extract(widths(1.0)), x)


def test_size_needs_an_example_tensor(supernet):
    with pytest.raises(ConfigError, match="example"):
        size_bytes(supernet.extract(supernet.largest()), None)
