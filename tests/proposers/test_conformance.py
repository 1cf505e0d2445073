"""Every registered engine passes the shared conformance suite."""

import pytest

from hybridmoo.proposers import available
from hybridmoo.testing.proposers import ProposerConformance

# engine options that keep the suite quick without changing what is tested
QUICK = {"surrogate": {"n_init": 6, "batch_size": 4, "inner_pop": 16, "inner_gens": 4,
                       "n_trees": 10}}


class TestEveryEngine(ProposerConformance):
    @pytest.fixture(params=[spec.name for spec in available()])
    def algorithm(self, request) -> str:
        self.options = QUICK.get(request.param, {})
        return request.param
