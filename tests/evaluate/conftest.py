"""Shared fixtures: a tiny test_resnet supernet with calibrated ranges and the digits data."""

import pytest
import torch

from hybridmoo.data import digits
from hybridmoo.supernet import make_supernet

IMAGE_SIZE = 32

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data():
    return digits(IMAGE_SIZE)


@pytest.fixture(scope="session")
def supernet(data):
    torch.manual_seed(0)
    sn = make_supernet("test_resnet", num_classes=10, image_size=IMAGE_SIZE)
    sn.calibrate([data.train.tensors[0][:64]])
    return sn


@pytest.fixture(scope="session")
def calib(data):
    return [data.train.tensors[0][i:i + 32] for i in range(0, 128, 32)]


@pytest.fixture(scope="session")
def quantized(supernet):
    return lambda w_bits=8, a_bits=8: _quantized(supernet, w_bits, a_bits)


@pytest.fixture(scope="session")
def widths(supernet):
    return lambda ratio: _widths(supernet, ratio)


def _quantized(sn, w_bits, a_bits):
    """The largest config with every quantization unit at ``w_bits`` / ``a_bits``."""
    config = sn.largest()
    for name in config:
        if name.endswith("w_bits"):
            config[name] = w_bits
        elif name.endswith("a_bits"):
            config[name] = a_bits
    return config


def _widths(sn, ratio):
    """The largest config with every width dimension at ``ratio`` (or its smallest value)."""
    config = sn.largest()
    for name, dim in sn.space.dims.items():
        if "width" in name:
            values = dim.values
            config[name] = ratio if ratio in values else min(values)
    return config
