"""Supernet training configs (``hybridmoo train-supernet --config train.yaml`` or a dict)::

    model: test_resnet        # timm name, or a local checkpoint file naming its architecture
    checkpoint: null          # local weights for the named model (the user's trained model)
    spec: null                # a supernet spec YAML; default: the bundled one for the model
    num_classes: null         # default: the data's
    image_size: 32
    data: digits              # built-in digits | fashion-mnist | {name: fashion-mnist, root:
                              # DIR} | an image folder (train/, val/ inside): {root: DIR,
                              # skip_corrupt: false}; corrupt images are errors unless skipped |
                              # a timm dataset: {name: torch/cifar10, root: DIR, download:
                              # false}; any of them with mean, std (normalisation) and augment
                              # (default on for folders / timm datasets); see hybridmoo.data.
                              # Data from Python: train_supernet(cfg, data=...)
    steps: 300                # optimizer steps
    batch_size: 64
    optimizer: adamw          # any timm optimizer name
    lr: 0.002
    weight_decay: 0.05
    warmup_steps: 10          # linear warm-up, then cosine decay to 0 (timm CosineLRScheduler)
    sandwich: true            # largest + smallest + random sub-networks per step
    random_subnets: 2         # N random sub-networks per step
    distill: true             # in-place distillation: the others learn the largest's output
    calib_batches: 4          # BatchNorm recalibration batches before an evaluation
    save_every: 100           # checkpoint every N steps (and at the end), when run_dir is set
    seed: 0
    run_dir: runs/supernet    # relative to the YAML file

Unknown keys and wrong types are :class:`ConfigError`\\ s naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hybridmoo.data import check_source
from hybridmoo.errors import ConfigError
from hybridmoo.loading import unknown_key


@dataclass(frozen=True)
class TrainConfig:
    """A validated supernet training run."""

    model: str = "test_resnet"
    checkpoint: str | None = None
    spec: str | None = None
    num_classes: int | None = None
    image_size: int = 32
    data: Any = "digits"
    steps: int = 300
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.002
    weight_decay: float = 0.05
    warmup_steps: int = 10
    sandwich: bool = True
    random_subnets: int = 2
    distill: bool = True
    calib_batches: int = 4
    save_every: int = 100
    seed: int = 0
    run_dir: str | None = None

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | Path | None = None,
                  source: str = "config") -> TrainConfig:
        """Check ``data`` key by key; relative paths are taken from ``base_dir``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise unknown_key(source, key, names)
            values[key] = _check(key, value, source)
        base = Path(base_dir) if base_dir is not None else None
        for key in ("checkpoint", "spec", "run_dir"):
            if values.get(key) is not None and base is not None:
                values[key] = str(base / values[key])
        if isinstance(values.get("data"), dict) and "root" in values["data"] and base is not None:
            values["data"] = {**values["data"], "root": str(base / values["data"]["root"])}
        if values.get("model", "").endswith((".safetensors", ".pt", ".pth")) and base is not None:
            values["model"] = str(base / values["model"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INTS = {"num_classes": 1, "image_size": 1, "steps": 1, "batch_size": 1, "warmup_steps": 0,
         "random_subnets": 0, "calib_batches": 1, "save_every": 0, "seed": 0}
_STRINGS = ("model", "checkpoint", "spec", "optimizer", "run_dir")


def _check(key: str, value: Any, source: str) -> Any:
    where = f"{source}: {key}"
    if key in _INTS:
        if value is None and key == "num_classes":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < _INTS[key]:
            raise ConfigError(f"{where} must be an int >= {_INTS[key]}, got {value!r}")
        return value
    if key in ("lr", "weight_decay"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                key == "lr" and value == 0):
            raise ConfigError(f"{where} must be a {'positive' if key == 'lr' else '>= 0'} "
                              f"number, got {value!r}")
        return float(value)
    if key in ("sandwich", "distill"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "data":
        return check_source(value, where)
    assert key in _STRINGS
    if value is None and key != "model" and key != "optimizer":
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def load_train_config(path: str | Path, overrides: Mapping[str, Any] | None = None
                      ) -> TrainConfig:
    """Read a YAML training config; ``overrides`` (command-line flags, ``None`` = not given)
    replace its keys, a relative ``run_dir`` among them taken from the current directory."""
    from hybridmoo.loading import read_yaml_file

    source = str(path)
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of training keys, got "
                          f"{type(data).__name__}")
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = str(Path(value).absolute()) if key == "run_dir" else value
    return TrainConfig.from_dict(data, base_dir=Path(path).parent, source=source)
