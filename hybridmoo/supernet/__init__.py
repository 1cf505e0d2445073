"""Elastic supernets from timm models: ``make_supernet(model) -> Supernet``, their training
(``train_supernet``) and checkpoints (``load_supernet``).

Importing this package imports torch, timm and torch-pruning; ``import hybridmoo`` does not.
"""

from hybridmoo.supernet.bn import recalibrate_bn
from hybridmoo.supernet.checkpoint import load_supernet, save_checkpoint
from hybridmoo.supernet.factory import make_supernet
from hybridmoo.supernet.layout import Layout, Plan, keep_count
from hybridmoo.supernet.spec import SupernetSpec, bundled_specs, spec_for_model
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.train_config import TrainConfig, load_train_config
from hybridmoo.supernet.training import TrainResult, evaluate_subnet, train_supernet

__all__ = [
    "Layout", "Plan", "Supernet", "SupernetSpec", "TrainConfig", "TrainResult",
    "bundled_specs", "evaluate_subnet", "keep_count", "load_supernet", "load_train_config",
    "make_supernet", "recalibrate_bn", "save_checkpoint", "spec_for_model", "train_supernet",
]
