"""Supernet checkpoints without pickle: tensors in ``supernet.safetensors``, everything else
(architecture, spec, channel orders, activation ranges, optimizer scalars, RNG states, the
caller's metadata) in ``supernet.json``. The JSON records the SHA-256 of the tensor file. Both
files are written in full to temporary names (fsynced) before the tensor file, then the JSON, is
renamed into place; a reader that finds the new tensors beside the old JSON (a kill between the
two renames) finishes the commit from the complete temporary JSON. So a kill at any moment
leaves the previous checkpoint or the new one, never a mix. Non-finite weights are refused."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hybridmoo.errors import ConfigError
from hybridmoo.files import sha256_file
from hybridmoo.supernet.models import architecture_of
from hybridmoo.supernet.spec import SupernetSpec
from hybridmoo.supernet.supernet import Supernet

WEIGHTS_FILE = "supernet.safetensors"
META_FILE = "supernet.json"
FORMAT = 1


def save_checkpoint(run_dir: str | Path, supernet: Supernet, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write the supernet (and optimizer state, torch RNG state, ``meta``) to ``run_dir``;
    returns the JSON file's path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous()
               for k, v in supernet.model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ConfigError(f"refusing to checkpoint non-finite weights ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}) to {run_dir}")
    tensors["rng.torch"] = torch.get_rng_state()
    info: dict[str, Any] = {
        "format": FORMAT, "architecture": architecture_of(supernet.model),
        "num_classes": getattr(supernet.model, "num_classes", None),
        "image_size": supernet.image_size, "spec": supernet.spec.to_dict(),
        "orders": supernet.layout.orders(), "act_ranges": supernet.act_ranges,
        "meta": dict(meta or {}),
    }
    if optimizer is not None:
        state, scalars = optimizer.state_dict(), {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().clone()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        info["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    weights, meta_path = run_dir / WEIGHTS_FILE, run_dir / META_FILE
    weights_tmp, meta_tmp = _tmp(weights), _tmp(meta_path)
    save_file(tensors, str(weights_tmp))
    _fsync(weights_tmp)
    info["sha256"] = sha256_file(weights_tmp)
    meta_tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
    _fsync(meta_tmp)
    os.replace(weights_tmp, weights)
    os.replace(meta_tmp, meta_path)
    return meta_path


def read_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON of a checkpoint directory (checked against each other)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta_path, weights = run_dir / META_FILE, run_dir / WEIGHTS_FILE
    _finish_commit(weights, meta_path)
    if not meta_path.is_file() or not weights.is_file():
        raise ConfigError(f"{run_dir}: no supernet checkpoint ({META_FILE} and {WEIGHTS_FILE})")
    try:
        info = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: invalid JSON: {exc}") from None
    if info.get("format") != FORMAT:
        raise ConfigError(f"{meta_path}: unknown checkpoint format {info.get('format')!r}")
    if info.get("sha256") != sha256_file(weights):
        raise ConfigError(f"{weights} does not match {meta_path} (a checkpoint was cut short)")
    return load_file(str(weights)), info


def load_supernet(run_dir: str | Path) -> Supernet:
    """Rebuild a saved supernet: ``timm.create_model(architecture)`` made elastic with the
    saved spec, channel orders, weights and activation ranges."""
    from hybridmoo.supernet.factory import make_supernet

    tensors, info = read_checkpoint(run_dir)
    if not info.get("architecture"):
        raise ConfigError(f"{run_dir}: the checkpoint names no timm architecture to rebuild")
    spec = SupernetSpec.from_dict(info["spec"], source=f"{run_dir}/{META_FILE}")
    sn = make_supernet(info["architecture"], info.get("num_classes"), spec=spec,
                       image_size=info["image_size"])
    restore(sn, tensors, info)
    return sn


def restore(supernet: Supernet, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any],
            optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load a checkpoint's orders, weights, activation ranges (and optimizer state, torch RNG
    state) into an already built supernet of the same architecture."""
    supernet.use_orders(info["orders"])
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        supernet.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the checkpoint does not fit this model: {exc}") from None
    supernet.act_ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in
                           info.get("act_ranges", {}).items()}
    if optimizer is not None:
        saved = info.get("optimizer")
        if saved is None:
            raise ConfigError("the checkpoint holds no optimizer state")
        states: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                states.setdefault(int(index), {})[name] = value
        for index, values in saved["scalars"].items():
            states.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": states, "param_groups": saved["param_groups"]})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _finish_commit(weights: Path, meta_path: Path) -> None:
    """A kill between the two renames of :func:`save_checkpoint` left the new tensors beside
    the old JSON and the new JSON complete under its temporary name: rename it into place."""
    meta_tmp = _tmp(meta_path)
    if not meta_tmp.is_file() or not weights.is_file() or _tmp(weights).exists():
        return
    try:
        pending = json.loads(meta_tmp.read_text())
    except (OSError, ValueError):
        return  # a temporary JSON cut short: its tensors were never renamed into place
    if isinstance(pending, dict) and pending.get("sha256") == sha256_file(weights):
        with contextlib.suppress(OSError):  # read-only: the check below reports the mismatch
            os.replace(meta_tmp, meta_path)
