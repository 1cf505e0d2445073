"""Fake quantization: scale math against hand computations (and onnxruntime's own helper when
it is installed), calibration, 4/8-bit weights, the FakeQuant wrapper."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import (
    FakeQuant,
    act_qparams,
    calibrate,
    fake_quant_act,
    fake_quant_bias,
    fake_quant_weight,
    weight_scales,
    wrap_layers,
)

torch.set_num_threads(1)


def test_weight_scales_are_per_output_channel_symmetric():
    w = torch.tensor([[0.5, -1.27, 0.1], [2.54, 0.0, -0.3], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(weight_scales(w, 8), torch.tensor([0.01, 0.02, 1.0]))
    torch.testing.assert_close(weight_scales(w, 4), torch.tensor([1.27 / 7, 2.54 / 7, 1.0]))


def test_8_bit_weights_by_hand():
    # row 0: absmax 31.75 -> scale 0.25; row 1: absmax 63.5 -> scale 0.5 (exact in binary)
    w = torch.tensor([[31.75, 0.125, 0.375, -0.625], [-63.5, 0.75, 1.25, 0.2]])
    # w / scale = [127, 0.5, 1.5, -2.5] and [-127, 1.5, 2.5, 0.4]: round half to even
    expected = torch.tensor([[31.75, 0.0, 0.5, -0.5], [-63.5, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(fake_quant_weight(w, 8), expected)


def test_4_bit_weights_by_hand():
    w = torch.tensor([[1.75, -0.875, 0.625, 0.1, -1.75]])  # absmax 1.75 -> scale 0.25
    expected = torch.tensor([[1.75, -1.0, 0.5, 0.0, -1.75]])  # -3.5 -> -4, 2.5 -> 2, 0.4 -> 0
    torch.testing.assert_close(fake_quant_weight(w, 4), expected)


def test_4_bit_uses_at_most_15_levels_per_channel():
    w = torch.randn(3, 200)
    q = fake_quant_weight(w, 4) / weight_scales(w, 4)[:, None]
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert float(q.abs().max()) <= 7 + 1e-4
    for row in q:
        assert len(torch.unique(row.round())) <= 15


def test_activation_qparams_by_hand():
    scale, zp = act_qparams(-1.0, 3.0)  # (3 - -1) / 255, zp = round(-128 + 1 / scale)
    assert float(scale) == pytest.approx(4.0 / 255)
    assert int(zp) == round(-128 + 255 / 4)  # -64.25 -> -64
    scale, zp = act_qparams(0.5, 2.0)  # the range is widened to include 0
    assert float(scale) == pytest.approx(2.0 / 255) and int(zp) == -128
    scale, zp = act_qparams(0.0, 0.0)
    assert float(scale) == 1.0 and int(zp) == 0


def test_activation_qparams_match_onnxruntime():
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    rng = np.random.default_rng(0)
    for lo, hi in [(-1.0, 3.0), (0.2, 5.0), (-7.3, -0.1), *rng.normal(0, 3, (20, 2))]:
        lo, hi = float(min(lo, hi)), float(max(lo, hi))
        zp, scale = quant_utils.compute_scale_zp(np.float32(lo), np.float32(hi), np.int8(-128),
                                                 np.int8(127), symmetric=False)
        ours_scale, ours_zp = act_qparams(float(np.float32(lo)), float(np.float32(hi)))
        assert float(ours_scale) == float(scale) and int(ours_zp) == int(zp)


def test_fake_quant_act_by_hand():
    scale, zp = torch.tensor(0.25), torch.tensor(-28.0)  # range [-25, 38.75]
    x = torch.tensor([0.0, 0.125, 0.375, 1.0, -100.0, 100.0])
    # round(x / 0.25) + zp, clamped to [-128, 127], back: (q - zp) * 0.25
    expected = torch.tensor([0.0, 0.0, 0.5, 1.0, -25.0, 38.75])
    torch.testing.assert_close(fake_quant_act(x, scale, zp), expected)


def test_bias_goes_to_the_int32_grid():
    bias = torch.tensor([0.1234, -0.5])
    out = fake_quant_bias(bias, torch.tensor(0.1), torch.tensor([0.01, 0.003]))
    torch.testing.assert_close(out, torch.tensor([0.123, -0.5001]))  # 123.4 -> 123, -1666.7


def test_straight_through_gradients():
    w = torch.randn(4, 8, requires_grad=True)
    fake_quant_weight(w, 4).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))
    x = torch.randn(10, requires_grad=True)
    fake_quant_act(x, *act_qparams(-3.0, 3.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_calibration_takes_the_overall_min_and_max():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    wrap_layers(net, {"0": (8, 8), "2": (4, 8)})
    batches = [torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[3.0, 0.0, -0.5]])]
    assert calibrate(net, batches) == 2
    torch.testing.assert_close(net[0].act_range, torch.tensor([-2.0, 3.0]))
    hidden = torch.cat([torch.relu(net[0].layer(b)) for b in batches])
    torch.testing.assert_close(net[2].act_range, torch.stack([hidden.min(), hidden.max()]))


def test_quantized_layer_is_close_to_fp32_but_not_equal():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        reference = conv(x)
    errors = {}
    for w_bits in (8, 4):
        q = FakeQuant(copy.deepcopy(conv), w_bits, 8)
        calibrate(q, [x])
        out = q(x)
        errors[w_bits] = float((out - reference).detach().abs().max())
        assert 0 < errors[w_bits] < 0.2 * float(reference.abs().max())
    assert errors[8] < errors[4]


def test_fake_quant_errors_and_is_picklable():
    with pytest.raises(ConfigError):
        FakeQuant(nn.ReLU(), 8, 8)
    with pytest.raises(ConfigError):
        FakeQuant(nn.Linear(2, 2), 6, 8)
    with pytest.raises(ConfigError):
        FakeQuant(nn.Linear(2, 2), 8, 4)
    q = FakeQuant(nn.Linear(2, 2), 8, 8)
    with pytest.raises(ConfigError, match="calibrate"):
        q(torch.ones(1, 2))
    with pytest.raises(ConfigError, match="no FakeQuant"):
        calibrate(nn.Linear(2, 2), [torch.ones(1, 2)])
    calibrate(q, [torch.randn(5, 2)])
    clone = pickle.loads(pickle.dumps(q))
    x = torch.randn(3, 2)
    assert torch.equal(clone(x), q(x))
    again = FakeQuant(nn.Linear(2, 2), 8, 8)
    again.load_state_dict(q.state_dict())  # the calibrated range travels in the state dict
    assert torch.equal(again(x), q(x))


def test_weight_scales_match_onnxruntime_per_channel_symmetric():
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    w = torch.randn(16, 3, 3, 3) * torch.rand(16, 1, 1, 1)
    ours = weight_scales(w, 8)
    for c in range(w.shape[0]):
        row = w[c].numpy()
        zp, scale = quant_utils.compute_scale_zp(row.min(), row.max(), np.int8(-127),
                                                 np.int8(127), symmetric=True)
        assert int(zp) == 0 and float(ours[c]) == float(scale)
