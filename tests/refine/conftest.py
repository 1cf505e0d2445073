"""Refinement fixtures (the digits data and the briefly trained supernet are in
tests/conftest.py)."""

import numpy as np
import pytest
import torch

from hybridmoo.supernet.training import calibration_batches, prepare_subnet

torch.set_num_threads(1)


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
