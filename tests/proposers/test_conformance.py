"""Every registered engine passes the shared conformance suite."""

import pytest
import torch

from hybridmoo.paretoset.model import ParetoSet, PreferenceModel
from hybridmoo.proposers import available
from hybridmoo.testing.proposers import SPACE, ProposerConformance

# engine options that keep the suite quick without changing what is tested
QUICK = {"surrogate": {"n_init": 6, "batch_size": 4, "inner_pop": 16, "inner_gens": 4,
                       "n_trees": 10}}


@pytest.fixture(scope="module")
def untrained_paretoset(tmp_path_factory) -> str:
    """An untrained Pareto set model over the suite's space: the contract does not depend on
    what the model learnt (its quality is scripts/bench_paretoset.py's)."""
    torch.manual_seed(0)
    model = PreferenceModel([d.size for d in SPACE.dims.values()])
    directory = tmp_path_factory.mktemp("paretoset")
    ParetoSet(model, SPACE).save(directory)
    return str(directory)


class TestEveryEngine(ProposerConformance):
    @pytest.fixture(params=[spec.name for spec in available()])
    def algorithm(self, request, untrained_paretoset) -> str:
        self.options = QUICK.get(request.param, {})
        if request.param == "paretoset":
            self.options = {"model": untrained_paretoset}
        return request.param
