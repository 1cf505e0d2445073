"""Turn what the user names into a model: a timm name (random init), an ``nn.Module``, or a
local checkpoint file (safetensors, or a torch file read with ``weights_only=True``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.supernet.spec import SupernetSpec, spec_for_model

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def architecture_of(model: nn.Module) -> str | None:
    """The timm architecture name a model was created as (from its ``pretrained_cfg``)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    return name if isinstance(name, str) else None


def is_checkpoint_path(value: Any) -> bool:
    """True for a path (``Path`` or a string naming a file or ending like a checkpoint)."""
    if isinstance(value, Path):
        return True
    return isinstance(value, str) and (value.endswith(CHECKPOINT_SUFFIXES) or Path(value).is_file())


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict in ``path`` and what it says about itself (safetensors metadata and a
    ``config.json`` beside it, timm's hub layout: ``architecture``, ``num_classes``)."""
    if not path.is_file():
        raise ConfigError(f"checkpoint file {str(path)!r} does not exist")
    info: dict[str, Any] = {}
    sidecar = path.parent / "config.json"
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{sidecar}: invalid JSON: {exc}") from None
        if isinstance(data, dict):
            info.update({k: data[k] for k in ("architecture", "num_classes") if k in data})
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:  # a corrupt or foreign file
            raise ConfigError(f"cannot read safetensors file {str(path)!r}: {exc}") from None
        info.update({k: meta[k] for k in ("architecture",) if k in meta})
        if "num_classes" in meta:
            info["num_classes"] = int(meta["num_classes"])
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickled objects other than tensors are refused
            raise ConfigError(f"cannot read torch checkpoint {str(path)!r} with "
                              f"weights_only=True: {type(exc).__name__}: {exc}") from None
    return _unwrap(state, path), info


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def create(name: str, spec: SupernetSpec, num_classes: int | None,
           image_size: int | None) -> nn.Module:
    """``timm.create_model(name)`` with random weights (never downloads)."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"{name!r} is not a timm model name")
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if spec.image_size_arg and image_size is not None:
        kwargs["img_size"] = int(image_size)
    return timm.create_model(name, **kwargs)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model``; classifier weights of another class count are left
    out (the classifier stays freshly initialised), any other mismatch is an error."""
    own = model.state_dict()
    head = _classifier_prefixes(model)
    dropped = [k for k, v in state.items() if k.startswith(head) and k in own
               and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = sorted(set(own) - set(state) - set(dropped))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise ConfigError(f"checkpoint {str(path)!r} does not fit "
                          f"{architecture_of(model) or type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=False)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", ()) if isinstance(cfg, dict) else ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def resolve_model(model: nn.Module | str | Path, num_classes: int | None,
                  spec: SupernetSpec | None, image_size: int | None,
                  checkpoint: str | Path | None) -> tuple[nn.Module, SupernetSpec]:
    """The module to make elastic and the spec that describes its family."""
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            raise ConfigError("checkpoint= goes with a timm model name, not with a module")
        spec = spec or spec_for_model(architecture_of(model))
        if num_classes is not None and hasattr(model, "reset_classifier") and \
                getattr(model, "num_classes", num_classes) != num_classes:
            model.reset_classifier(int(num_classes))
        return model, spec
    if not isinstance(model, str | Path):
        raise ConfigError(f"model must be a timm name, an nn.Module or a checkpoint path, "
                          f"got {type(model).__name__}")
    state = info = None
    if is_checkpoint_path(model):
        if checkpoint is not None:
            raise ConfigError("give the checkpoint either as model= or as checkpoint=")
        checkpoint, name = Path(model), None
    else:
        name = str(model)
    if checkpoint is not None:
        state, info = read_checkpoint(Path(checkpoint))
        name = name or info.get("architecture")
        if name is None:
            raise ConfigError(f"checkpoint {str(checkpoint)!r} does not name its architecture "
                              "(no 'architecture' in its safetensors metadata or a config.json "
                              "beside it): pass make_supernet('<timm name>', checkpoint=path)")
        if num_classes is None:
            num_classes = info.get("num_classes") or _classes_in(state)
    spec = spec or spec_for_model(name)
    net = create(name, spec, num_classes, image_size)
    if state is not None:
        load_weights(net, state, Path(checkpoint))
    return net, spec


def _classes_in(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "head.fc.weight", "head.weight", "classifier.weight"):
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None
