"""hybridmoo: find the Pareto set of compressed neural networks.

The black-box search API::

    from hybridmoo import Choice, IntRange, SearchSpace, Objective, search

``pick`` chooses the exported Pareto point to deploy under latency / size / accuracy limits.
Elastic supernets (``make_supernet``, ``train_supernet``) and ``load_subnet`` (an exported
network) are imported lazily:
``import hybridmoo`` does not import torch, timm or torch-pruning.
"""

from typing import Any

from hybridmoo.archive import ParetoArchive
from hybridmoo.backends import Backend, LocalBackend
from hybridmoo.errors import ConfigError, HybridMooError, RunDirError
from hybridmoo.objectives import Constraint, EvalResult, Objective
from hybridmoo.pick import pick  # torch only when called (not lazy: see hybridmoo.pick)
from hybridmoo.proposers import DEFAULT_ALGORITHM, Proposer, available, make_proposer
from hybridmoo.search import SearchResult, search
from hybridmoo.space import Candidate, Choice, IntRange, SearchSpace

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALGORITHM", "Backend", "Candidate", "Choice", "ConfigError", "Constraint",
    "EvalResult", "HybridMooError", "IntRange", "LocalBackend", "Objective", "ParetoArchive",
    "Proposer", "RunDirError", "SearchResult", "SearchSpace", "available", "load_subnet",
    "make_proposer", "make_supernet", "pick", "search", "train_supernet",
]

_LAZY = {"make_supernet": "hybridmoo.supernet", "train_supernet": "hybridmoo.supernet",
         "load_subnet": "hybridmoo.export"}


def __getattr__(name: str) -> Any:
    """Import heavy attributes on first use (module ``__getattr__``, PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hybridmoo' has no attribute {name!r}")
