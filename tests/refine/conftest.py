"""Shared fixtures: digits data and a briefly trained test_resnet supernet."""

import numpy as np
import pytest
import torch

from hybridmoo.data import digits, epoch_batches
from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.training import calibration_batches, prepare_subnet, sandwich_step

torch.set_num_threads(1)
TRAIN_STEPS = 40


def fp32(config):
    return {k: (32 if k.endswith("_bits") else v) for k, v in config.items()}


@pytest.fixture(scope="session")
def data():
    return digits(32)


@pytest.fixture(scope="session")
def trained(data):
    """A test_resnet supernet after a few sandwich steps (largest ~99 %, smallest ~95 % on
    digits val), with calibrated activation ranges."""
    torch.manual_seed(0)
    sn = make_supernet("test_resnet", num_classes=10, image_size=32)
    optimizer = torch.optim.Adam(sn.model.parameters(), lr=3e-3)
    batches = (b for epoch in range(100) for b in epoch_batches(data.train, 64, 0, epoch))
    for _, (x, y) in zip(range(TRAIN_STEPS), batches, strict=False):
        sandwich_step(sn, optimizer, x, y, [fp32(sn.smallest())], True)
    sn.calibrate(calibration_batches(data, 64, 0, 2))
    return sn


@pytest.fixture(scope="session")
def calib(data):
    return calibration_batches(data, 64, 0, 2)


@pytest.fixture
def subnet(trained, calib):
    """``subnet(config)``: the extracted, recalibrated sub-network."""
    def make(config):
        return prepare_subnet(trained, config, calib)
    return make


@pytest.fixture
def mid_config(trained):
    """``mid_config(w_bits, a_bits)``: largest widths, every block kept, weights at
    ``w_bits`` and layer inputs at ``a_bits``."""
    def make(w_bits=8, a_bits=32):
        config = dict(trained.largest())
        for k in config:
            if k.endswith("w_bits"):
                config[k] = w_bits
            elif k.endswith("a_bits"):
                config[k] = a_bits
        return config
    return make


@pytest.fixture
def random_config(trained):
    """``random_config(seed)``: a config drawn from the supernet's space."""
    return lambda seed: trained.space.sample(np.random.default_rng(seed))
