"""``hybridmoo demo``: the whole pipeline on the built-in digits data in a few CPU minutes.

timm's tiny ``test_resnet`` becomes a supernet (elastic depth and widths, 4/8/32-bit weights,
8/32-bit activations) trained with the sandwich rule; the default engine searches it on
measured accuracy, latency and size with gradient refinement rounds; the front is exported
(safetensors + manifest + ONNX, INT8 where quantized) and reported (HTML + PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridmoo.pipeline_config import PipelineConfig, pipeline_config_from_dict

DEMO: dict[str, Any] = {
    "supernet": {"model": "test_resnet", "image_size": 32, "data": "digits", "steps": 300,
                 "batch_size": 64, "lr": 0.002, "warmup_steps": 10, "random_subnets": 2,
                 "save_every": 100, "seed": 0},
    "device": "cpu",
    "evaluation": {"batch_size": 256, "latency_batch": 1, "repeats": 15, "warmup": 3},
    "max_evals": 40,
    "seed": 0,
    # digits leaves sub-networks little to recover: the shorter recovery of the earlier default,
    # and half the front tuning
    "refine": {"every": 20, "survivors": 3, "steps": 30, "recovery_steps": 60,
               "front_steps": 200},
}


def demo_config(run_dir: str | Path, *, steps: int | None = None, **overrides: Any
                ) -> PipelineConfig:
    """The demo's pipeline config writing to ``run_dir``; ``steps`` replaces the training
    steps and ``overrides`` top-level keys (``None`` values are ignored)."""
    data = {**DEMO, **{k: v for k, v in overrides.items() if v is not None},
            "run_dir": str(Path(run_dir).absolute())}
    if steps is not None:
        data["supernet"] = {**DEMO["supernet"], "steps": steps}
    return pipeline_config_from_dict(data, source="demo")
