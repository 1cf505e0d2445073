"""Latency, MACs and devices, on real torch and onnxruntime runs (size: test_size)."""

import pytest
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import (
    count_macs,
    device_name,
    export_onnx,
    measure_latency,
    measure_onnx_latency,
    resolve_device,
)


def test_measured_latency_is_positive_after_warmup(supernet):
    net = supernet.extract(supernet.largest())
    stats = measure_latency(net, torch.randn(1, 3, 32, 32), warmup=2, repeats=5)
    assert stats.median_ms > 0 and len(stats.runs_ms) == 5 and stats.cv >= 0
    assert min(stats.runs_ms) <= stats.median_ms <= max(stats.runs_ms)


def test_onnx_latency_is_positive(supernet, tmp_path):
    net = supernet.extract(supernet.largest())
    x = torch.randn(2, 3, 32, 32)
    stats = measure_onnx_latency(export_onnx(net, x, tmp_path / "m.onnx"), x, warmup=1,
                                 repeats=3)
    assert stats.median_ms > 0 and len(stats.runs_ms) == 3


def test_latency_rejects_bad_repeats(supernet):
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(supernet.extract(supernet.largest()), torch.randn(1, 3, 32, 32),
                        repeats=0)


def test_macs_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    # conv: 8 out channels * 16 positions * 3*3*3 ; linear: 128 * 5
    assert count_macs(net, torch.randn(1, 3, 4, 4)) == 8 * 16 * 27 + 128 * 5
    assert count_macs(net, torch.randn(2, 3, 4, 4)) == 2 * (8 * 16 * 27 + 128 * 5)


def test_macs_shrink_with_width(supernet, widths):
    x = torch.randn(1, 3, 32, 32)
    macs = [count_macs(supernet.extract(widths(r)), x) for r in (0.25, 0.5, 1.0)]
    assert macs[0] < macs[1] < macs[2]


@pytest.mark.parametrize("name", ["tpu", "cuda:7", "not a device", "cuda:-1"])
def test_resolve_device_refuses_unknown_or_missing(name):
    if name == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ConfigError, match="device"):
        resolve_device(name)


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert device_name("cpu")
