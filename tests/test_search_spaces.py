"""Every declarative space in search_spaces/ loads and round-trips."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from hybridmoo import SearchSpace

SPACES = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space_file_loads_and_round_trips(path):
    space = SearchSpace(yaml.safe_load(path.read_text()))
    assert SearchSpace(space.to_json()) == space
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = space.sample(rng)
        assert space.decode(space.encode(config)) == config


def test_there_is_at_least_one_space():
    assert SPACES
