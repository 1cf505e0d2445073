"""``make_supernet``: a timm model (by name, module or checkpoint) made elastic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.supernet.analysis import analyse
from hybridmoo.supernet.models import resolve_model
from hybridmoo.supernet.reorder import sort_channels
from hybridmoo.supernet.spec import SupernetSpec
from hybridmoo.supernet.supernet import Supernet


def make_supernet(model: nn.Module | str | Path, num_classes: int | None = None, *,
                  spec: SupernetSpec | str | Path | None = None,
                  image_size: int | None = None,
                  checkpoint: str | Path | None = None) -> Supernet:
    """Make ``model`` a weight-sharing supernet.

    ``model`` is a timm model name (random init: nothing is downloaded), an ``nn.Module``
    (used in place: its weights are the supernet's, their channels and heads reordered by
    importance, which leaves its outputs as they were), or a local checkpoint file naming its
    architecture (safetensors metadata or a timm ``config.json`` beside it); ``checkpoint=``
    loads local weights into a named model. ``spec`` is a family spec (a YAML path or a
    :class:`SupernetSpec`), found by model name when omitted. ``image_size`` is the input size
    (default: the model's own); the model is traced once at that size.
    """
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
    if spec is not None and not isinstance(spec, SupernetSpec):
        spec = SupernetSpec.from_file(spec)
    net, spec = resolve_model(model, num_classes, spec, image_size, checkpoint)
    size = image_size or _own_image_size(net)
    fixed = bool(getattr(getattr(net, "patch_embed", None), "strict_img_size", False))
    own = _own_image_size(net)
    if fixed and size != own:
        raise ConfigError(f"this model was built for {own}x{own} images, not {size}x{size}: "
                          f"pass its name with image_size={size} to rebuild it")
    in_chans = _in_chans(net)
    min_size = _total_stride(net)
    if size < min_size:
        raise ConfigError(f"image_size {size} is below the model's total stride {min_size}")
    device = next(net.parameters()).device
    example = torch.randn(1, in_chans, size, size, device=device)
    was_training = net.training
    net.eval()
    try:
        layout = sort_channels(net, analyse(net, spec, example))
    finally:
        net.train(was_training)
    return Supernet(net, spec, layout, image_size=size, in_chans=in_chans, min_size=min_size,
                    fixed_size=fixed)


def _own_image_size(net: nn.Module) -> int:
    img_size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    if isinstance(img_size, tuple | list) and img_size:
        return int(img_size[-1])
    cfg: Any = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return int(size[-1]) if size else 224


def _in_chans(net: nn.Module) -> int:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    raise ConfigError(f"{type(net).__name__} has no Conv2d layer: cannot tell its input channels")


def _total_stride(net: nn.Module) -> int:
    info = getattr(net, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(i, dict) for i in info):
        return max(int(i.get("reduction", 1)) for i in info)
    return 1
