"""A pipeline run that finishes in seconds, for tests of what reads a run directory (export,
report, pick): a test_resnet supernet on the built-in digits, 8 training steps, 6 evaluations
with refinement rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_PIPELINE: dict[str, Any] = {
    "supernet": {"model": "test_resnet", "image_size": 32, "steps": 8, "batch_size": 32,
                 "save_every": 4},
    "evaluation": {"repeats": 3, "warmup": 1},
    "max_evals": 6, "algorithm": "random", "seed": 0,
    "refine": {"every": 3, "survivors": 2, "steps": 3, "recovery_steps": 3, "front_steps": 4},
}


def tiny_pipeline(run_dir: str | Path, **changes: Any) -> Any:
    """:data:`TINY_PIPELINE` in ``run_dir`` with ``changes`` (top-level keys) applied, as a
    :class:`hybridmoo.pipeline_config.PipelineConfig`."""
    from hybridmoo.pipeline_config import pipeline_config_from_dict

    return pipeline_config_from_dict({**TINY_PIPELINE, **changes, "run_dir": str(run_dir)})
