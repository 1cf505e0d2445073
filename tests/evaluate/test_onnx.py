"""The reference and INT8 (static QDQ) ONNX models against the torch networks, in
onnxruntime."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import (
    export_onnx,
    int8_layers,
    onnx_session,
    quantize_int8,
    quantizes,
    run_onnx,
    to_float,
)
from hybridmoo.evaluate.size import size_bytes
from hybridmoo.quant import calibrate
from hybridmoo.supernet import recalibrate_bn


def initializer_bytes(path):
    """What an ONNX file stores for its weights: the bytes of its initializers."""
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def _prepared(sn, config, calib):
    net = sn.extract(config)
    recalibrate_bn(net, calib)
    if quantizes(net):
        calibrate(net, calib)
    return net


def test_fp32_onnx_matches_the_float_network(supernet, quantized, calib, tmp_path, data):
    net = _prepared(supernet, quantized(4, 32), calib)  # 4-bit weights baked into the file
    x = data.val.tensors[0][:16]
    path = export_onnx(net, x[:1], tmp_path / "m.onnx")
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x), expected, atol=1e-4, rtol=1e-4)
    model = onnx.load(str(path))
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left


@pytest.mark.parametrize("w_bits", [4, 8])
def test_int8_model_runs_and_stays_close_to_fake_quant(supernet, quantized, calib, tmp_path,
                                                       data, w_bits):
    net = _prepared(supernet, quantized(w_bits, 8), calib)
    x = data.val.tensors[0][:64]
    int8 = quantize_int8(net, x[:1], tmp_path / "m.int8.onnx", calib)
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    got = run_onnx(onnx_session(int8), x)
    with torch.no_grad():
        fake = net(x).numpy()
        float_ = to_float(net)(x).numpy()
    # onnxruntime also rounds each quantized layer's output and residual inputs (module
    # docstring): within 10 % of the logit range, and about as far as the float network is
    span = float(np.abs(fake).max())
    assert np.abs(got - fake).max() <= 0.1 * span
    assert np.abs(got - fake).max() <= 2.0 * np.abs(float_ - fake).max() + 0.02 * span
    assert (got.argmax(1) == fake.argmax(1)).mean() >= 0.9


def test_the_reference_model_fake_quantizes_inputs_in_float_ops(supernet, quantized, calib,
                                                                tmp_path, data):
    """Not as QuantizeLinear / DequantizeLinear: onnxruntime turns DequantizeLinear -> Conv
    (float weights) -> QuantizeLinear into an int8 kernel, which changes the outputs."""
    net = _prepared(supernet, quantized(4, 8), calib)
    x = data.val.tensors[0][:64]
    model = onnx.load(str(export_onnx(net, x[:1], tmp_path / "m.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Round") == len(int8_layers(net))
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    with torch.no_grad():
        fake, float_ = net(x).numpy(), to_float(net)(x).numpy()
    got = run_onnx(tmp_path / "m.onnx", x)
    # float rounding of the folded BatchNorm may move a value on a rounding boundary to the
    # next 8-bit step on a few images (tests/export states the tolerance); float activations
    # are off on nearly all of them
    tol = 1e-4 * np.abs(fake).max()
    assert (np.abs(got - fake).max(axis=1) <= tol).mean() >= 0.9
    assert (np.abs(float_ - fake).max(axis=1) <= tol).mean() < 0.1


def test_4_bit_weights_keep_their_grid(supernet, quantized, calib, tmp_path, data):
    net = _prepared(supernet, quantized(4, 8), calib)
    model = onnx.load(str(quantize_int8(net, data.val.tensors[0][:1], tmp_path / "q.onnx",
                                        calib)))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims and len(i.dims) == 4]
    assert len(weights) == len(int8_layers(net))
    for w in weights:
        assert np.abs(w).max() <= 7  # int8 storage of the 4-bit values [-7, 7]


def test_int8_needs_an_8_bit_input_layer(supernet, quantized, calib, tmp_path, data):
    net = _prepared(supernet, quantized(8, 32), calib)  # weight-only: no int8 kernel
    assert quantizes(net) and not int8_layers(net)
    with pytest.raises(ConfigError, match="8 bits"):
        quantize_int8(net, data.val.tensors[0][:1], tmp_path / "q.onnx", calib)
    assert not (tmp_path / "q.onnx").exists()


def test_onnx_session_refuses_a_broken_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="onnxruntime"):
        onnx_session(path)


@pytest.mark.parametrize("family", ["test_efficientnet", "test_convnext", "test_vit"])
def test_int8_finds_every_layer_in_other_families(family, tmp_path, data):
    """Nested containers (EfficientNet's blocks.0.0.conv) name their ONNX nodes differently."""
    from hybridmoo.supernet import make_supernet

    sn = make_supernet(family, num_classes=10, image_size=32)
    calib = [data.train.tensors[0][:32]]
    sn.calibrate(calib)
    config = {name: 8 if name.endswith("a_bits") else value
              for name, value in sn.largest().items()}
    net = _prepared(sn, config, calib)
    assert int8_layers(net)
    x = data.val.tensors[0][:8]
    path = quantize_int8(net, x[:1], tmp_path / "q.onnx", calib)
    got = run_onnx(path, x)
    assert got.shape == (8, 10) and np.isfinite(got).all()
    assert size_bytes(net, x) == initializer_bytes(path)  # BatchNormAct2d, SE, attention
