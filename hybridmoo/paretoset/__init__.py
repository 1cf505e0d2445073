"""Pareto set learning over a supernet: a preference-conditioned model that returns the
sub-network for any trade-off, or for a latency or size limit, without a new search.

    ps = train_paretoset(supernet, data, run_dir="runs/paretoset")
    ps.config_for([0.6, 0.2, 0.2])          # task, latency, size
    ps.config_for(latency_ms=2.0)
    ps = load_paretoset("runs/paretoset", supernet)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridmoo.paretoset.model import OBJECTIVES, ParetoSet, PreferenceModel
from hybridmoo.paretoset.train import ParetoSetSettings, train_paretoset

__all__ = ["OBJECTIVES", "ParetoSet", "ParetoSetSettings", "PreferenceModel", "load_paretoset",
           "train_paretoset"]


def load_paretoset(directory: str | Path, supernet: Any = None) -> ParetoSet:
    """A saved Pareto set model; with its ``supernet`` it also answers cost limits (the cost
    model is rebuilt with the latency model it was trained with)."""
    import torch

    from hybridmoo.evaluate.latency_model import LatencyModel
    from hybridmoo.paretoset.costs import RelaxedCosts

    ps = ParetoSet.load(directory)
    if supernet is None:
        return ps
    if ps.space != supernet.space:
        from hybridmoo.errors import ConfigError
        raise ConfigError(f"the Pareto set model in {directory} belongs to another supernet")
    saved = ps.info.get("latency_model")
    latency = LatencyModel.from_dict(saved, source=str(directory)) if saved else None
    device = next(supernet.model.parameters()).device
    example = torch.zeros(1, supernet.in_chans, supernet.image_size, supernet.image_size,
                          device=device)
    ps.costs = RelaxedCosts(supernet, example, latency).of_config
    return ps
