"""hybridmoo: find the Pareto set of compressed neural networks.

The black-box search API::

    from hybridmoo import Choice, IntRange, SearchSpace, Objective, search
"""

from hybridmoo.archive import ParetoArchive
from hybridmoo.backends import Backend, LocalBackend
from hybridmoo.errors import ConfigError, HybridMooError, RunDirError
from hybridmoo.objectives import Constraint, EvalResult, Objective
from hybridmoo.proposers import DEFAULT_ALGORITHM, Proposer, available, make_proposer
from hybridmoo.search import SearchResult, search
from hybridmoo.space import Candidate, Choice, IntRange, SearchSpace

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALGORITHM", "Backend", "Candidate", "Choice", "ConfigError", "Constraint",
    "EvalResult", "HybridMooError", "IntRange", "LocalBackend", "Objective", "ParetoArchive",
    "Proposer", "RunDirError", "SearchResult", "SearchSpace", "available", "make_proposer",
    "search",
]
