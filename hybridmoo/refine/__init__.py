"""Gradient multi-objective refinement of search survivors.

Each survivor's network gets differentiable channel / head gates and learned quantizer step
sizes, is trained for a few steps on [task loss, differentiable latency, size in bytes]
combined by a :mod:`hybridmoo.gradmoo` solver under a preference taken from its position on
the front, and is hardened back into a physically pruned timm network.

Importing this package imports torch, timm and torch-pruning; ``import hybridmoo`` does not.
"""

from hybridmoo.preference import gap_preference, refinement_preference
from hybridmoo.refine.loop import OBJECTIVES, RefineOutcome, refine_network
from hybridmoo.refine.refiner import Refiner
from hybridmoo.refine.settings import RefineSettings

__all__ = ["OBJECTIVES", "RefineOutcome", "RefineSettings", "Refiner", "gap_preference",
           "refine_network", "refinement_preference"]
