"""The evaluate function used by custom_space.yaml: replace its body with your own training.

``evaluate(config) -> dict`` receives one config (a dict with one value per dimension of the
space) and returns a dict holding every objective and constraint named in the YAML file; other
keys are kept in the journal as extra information. An exception, or a missing or non-finite
value, records that config as a failed evaluation and the search goes on.

This stand-in needs no data: it scores a hypothetical convolutional net with a smooth formula
(more capacity -> lower error, more parameters and more latency), deterministically.
"""

from __future__ import annotations

from typing import Any

ACTIVATION_ERROR = {"relu": 0.0, "gelu": -0.004, "tanh": 0.012}
ACTIVATION_COST = {"relu": 1.0, "gelu": 1.15, "tanh": 1.1}


def evaluate(config: dict[str, Any]) -> dict[str, float]:
    width, depth, kernel = config["width"], config["depth"], config["kernel"]
    params = depth * (kernel * kernel * width * width + width) + 10 * (width + 1)
    error = 0.02 + 2.0 * params ** -0.35 + 0.008 * abs(depth - 4)
    error += ACTIVATION_ERROR[config["activation"]]
    latency_ms = 1e-4 * params ** 0.8 * ACTIVATION_COST[config["activation"]]
    return {"error": error, "params": float(params), "latency_ms": latency_ms}
