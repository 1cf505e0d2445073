"""A network directory: ``model.safetensors`` plus ``manifest.json`` (structure, digests).

``save_network`` is the minimal form (weights of refined networks inside a run directory);
:func:`hybridmoo.export.export_point` writes the same two files plus ONNX models and richer
metadata. ``load_subnet`` reads either: digests checked, structure rebuilt, weights loaded,
all without the supernet and without pickle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.export.files import (
    MANIFEST,
    read_manifest,
    safe_name,
    write_manifest,
)
from hybridmoo.export.structure import describe, load_state, rebuild
from hybridmoo.files import write_atomic

WEIGHTS = "model.safetensors"
FORMAT = 1


def save_network(net: nn.Module, directory: str | os.PathLike[str], *,
                 meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``net``'s weights and structure to ``directory`` (created if needed); returns
    the manifest's path. ``meta`` is any JSON-able data to keep with it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "kind": "network", "structure": describe(net),
            "weights": WEIGHTS, "meta": dict(meta or {})}
    write_weights(net, directory / WEIGHTS, body["structure"]["architecture"])
    return write_manifest(directory, body, [WEIGHTS])


def write_weights(net: nn.Module, path: Path, architecture: str) -> None:
    """``net.state_dict()`` as safetensors at ``path`` (temporary name, then rename)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    write_atomic(path, save(state, metadata={"format": "pt", "architecture": architecture}))


def load_subnet(path: str | os.PathLike[str]) -> nn.Module:
    """The network exported to ``path`` (a directory or its ``manifest.json``), rebuilt from
    the manifest and the weights, in eval mode. Every file's SHA-256 is checked first: a
    changed or missing file is a ConfigError."""
    from safetensors.torch import load_file

    manifest = read_manifest(path)
    directory = Path(path)
    if directory.name == MANIFEST and directory.is_file():
        directory = directory.parent
    if manifest.get("format") != FORMAT or "structure" not in manifest:
        raise ConfigError(f"{directory / MANIFEST}: unknown manifest format "
                          f"{manifest.get('format')!r} (expected {FORMAT})")
    weights = safe_name(manifest.get("weights"), str(directory / MANIFEST))
    if weights not in manifest["files"]:
        raise ConfigError(f"{directory / MANIFEST}: the weights file {weights!r} has no sha256")
    net = rebuild(manifest["structure"])
    try:
        state: dict[str, torch.Tensor] = load_file(str(directory / weights))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ConfigError(f"{directory / weights}: cannot read: {exc}") from None
    return load_state(net, state, str(directory / weights)).eval()


def load_network(directory: str | os.PathLike[str]) -> nn.Module:
    """The network :func:`save_network` wrote to ``directory`` (same checks as
    :func:`load_subnet`)."""
    return load_subnet(directory)
