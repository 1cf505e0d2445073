"""Export of Pareto points: safetensors weights, a self-checking manifest, FP32 and INT8 ONNX;
``load_subnet`` rebuilds a network from them without the supernet and without pickle.

Importing this package imports torch, timm and torch-pruning; ``import hybridmoo`` does not.
"""

from hybridmoo.export.files import read_manifest
from hybridmoo.export.front import FrontPoint, export_front, point_dir_name, read_front
from hybridmoo.export.network import load_network, load_subnet, save_network
from hybridmoo.export.point import export_point, versions
from hybridmoo.export.run import export_run, export_run_front
from hybridmoo.export.structure import describe, rebuild

__all__ = [
    "FrontPoint", "describe", "export_front", "export_point",
    "export_run", "export_run_front", "load_network", "load_subnet", "point_dir_name",
    "read_front", "read_manifest", "rebuild", "save_network", "versions",
]
