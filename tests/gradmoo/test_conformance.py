"""Every registered gradient solver passes the shared conformance suite."""

import pytest

from hybridmoo.gradmoo import SOLVERS
from hybridmoo.testing.solvers import SolverConformance


class TestEverySolver(SolverConformance):
    @pytest.fixture(params=list(SOLVERS))
    def solver(self, request) -> str:
        return request.param
