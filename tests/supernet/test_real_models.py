"""The full-size models each bundled spec names become supernets whose extracted sub-networks
match (random init, small images). Heavy: run with ``-m slow``."""

import numpy as np
import pytest
import torch

from hybridmoo.supernet import bundled_specs, make_supernet
from hybridmoo.testing.spaces import FP32_TOLERANCE, count_params, fp32, randomize_

MODELS = sorted(m for s in bundled_specs().values() for m in s.models
                if not m.startswith("test_"))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_real_model_extracts_and_matches(name):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sn = make_supernet(name, num_classes=10, image_size=64)
    randomize_(sn.model)
    sn.eval()
    x = torch.randn(2, 3, 64, 64)
    rng = np.random.default_rng(0)
    for config in (fp32(sn.smallest()), fp32(sn.space.sample(rng))):
        net = sn.extract(config)
        with torch.no_grad():
            diff = float((sn(x, config) - net(x)).abs().max())
        assert diff <= FP32_TOLERANCE, (name, diff)
        assert count_params(net) < count_params(sn)
