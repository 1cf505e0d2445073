"""Sliced execution: what it reports, where it falls back to masking, the importance-order
storage it relies on, and that a forward leaves the model as it found it."""

import copy

import numpy as np
import pytest
import timm
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.reorder import permutable
from hybridmoo.supernet.training import fp32
from hybridmoo.testing.spaces import FP32_TOLERANCE, assert_same_gradients, randomize_

torch.set_num_threads(1)


def tiny(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(timm.create_model(name, num_classes=10, **kwargs))


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class TaggedConv(nn.Conv2d):
    """A convolution holding a tensor slicing does not know (it must be masked)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, bias=conv.bias is not None)
        self.load_state_dict(conv.state_dict())
        self.register_buffer("tag", torch.zeros(()))


def test_the_execution_plan_says_what_slices_masks_and_skips():
    sn = make_supernet(tiny("test_resnet", layers=(2, 1, 2, 1)), image_size=32)
    config = fp32(sn.smallest())
    plan = sn.execution_plan(config)
    assert plan.sliced and not plan.masked
    assert plan.skipped == sn.plan(config).skip and plan.skipped
    assert "layers sliced" in plan.summary()
    assert sn.execution_plan(sn.largest()).sliced == ()
    sn.execution = "mask"
    masked = sn.execution_plan(config)
    assert masked.masked and not masked.sliced
    assert set(masked.reasons.values()) == {"masking mode"}
    with pytest.raises(ConfigError, match="execution must be one of"):
        sn.execution = "gather"


def test_a_layer_slicing_does_not_know_is_masked_and_the_sub_network_stays_right():
    model = tiny("test_resnet")
    model.layer1[0].conv1 = TaggedConv(model.layer1[0].conv1)
    sn = make_supernet(model, image_size=32).eval()
    config = {k: sn.largest()[k] if k.endswith(".depth") else v  # keep layer1.0
              for k, v in fp32(sn.smallest()).items()}
    plan = sn.execution_plan(config)
    assert "layer1.0.conv1" in plan.masked and "bn1" in plan.masked  # its input channels
    assert "tag" in plan.reasons["layer1.0.conv1"]
    assert plan.sliced, "the other groups still slice"
    x = images()
    with torch.no_grad():
        diff = (sn(x, config) - sn.extract(config)(x)).abs().max()
    assert float(diff) <= FP32_TOLERANCE
    reference = copy.deepcopy(sn)
    reference.execution = "mask"
    for net in (sn, reference):
        net.train()
        net(x, config).pow(2).mean().backward()
    assert_same_gradients(sn, reference)


def test_channels_are_stored_in_importance_order_with_the_function_unchanged():
    model = tiny("test_efficientnet", depth_multiplier=2.0).eval()
    x = images()
    with torch.no_grad():
        before = model(x)
    sn = make_supernet(model, image_size=32)
    assert all(g.order == tuple(range(g.channels)) for g in sn.layout.groups if permutable(g))
    with torch.no_grad():
        assert float((sn(x, sn.largest()) - before).abs().max()) <= FP32_TOLERANCE
    vit = tiny("test_vit", img_size=32).eval()
    with torch.no_grad():
        before = vit(x)
    sn = make_supernet(vit, image_size=32)
    assert sn.layout.heads and all(h.order == tuple(range(h.num_heads))
                                   for h in sn.layout.heads)
    with torch.no_grad():
        assert float((sn(x, sn.largest()) - before).abs().max()) <= FP32_TOLERANCE


def test_saved_orders_that_are_not_prefixes_slice_by_gathering():
    """A checkpoint written before channels were stored in order carries a permutation: the
    slices are gathered, and they still equal masking and extraction."""
    sn = make_supernet(tiny("test_vit", img_size=32), image_size=32)
    rng = np.random.default_rng(0)
    orders = sn.layout.orders()
    orders = {kind: {k: [int(i) for i in rng.permutation(v)] for k, v in part.items()}
              for kind, part in orders.items()}
    sn.use_orders(orders)
    reference = copy.deepcopy(sn)
    reference.execution = "mask"
    x = images()
    config = fp32(sn.space.sample(rng))
    sn.eval(), reference.eval()
    with torch.no_grad():
        ours, theirs, extracted = sn(x, config), reference(x, config), sn.extract(config)(x)
    assert float((ours - theirs).abs().max()) <= FP32_TOLERANCE
    assert float((ours - extracted).abs().max()) <= FP32_TOLERANCE
    for net in (sn, reference):
        net.train()
        net(x, config).pow(2).mean().backward()
    assert_same_gradients(sn, reference)


def structure(model: nn.Module) -> list:
    out = []
    for name, m in model.named_modules():
        attrs = {a: getattr(m, a) for a in ("in_channels", "out_channels", "groups",
                                             "in_features", "out_features", "num_features",
                                             "num_heads", "attn_dim") if hasattr(m, a)}
        out.append((name, type(m).__name__, attrs, len(m._forward_hooks),
                    len(m._forward_pre_hooks)))
    return out


@pytest.mark.parametrize("name,kwargs", [("test_efficientnet", {"depth_multiplier": 2.0}),
                                         ("test_vit", {"img_size": 32})])
def test_a_forward_leaves_the_model_as_it_found_it_even_when_it_fails(name, kwargs):
    sn = make_supernet(tiny(name, **kwargs), image_size=32)
    start = structure(sn.model)
    x = images()
    sn(x, fp32(sn.smallest())).sum().backward()
    assert structure(sn.model) == start
    sliced = sn.execution_plan(fp32(sn.smallest())).sliced
    inner = dict(sn.model.named_modules())[sliced[len(sliced) // 2]]

    def fail(*_):
        raise RuntimeError("boom")

    handle = inner.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        sn(x, fp32(sn.smallest()))
    handle.remove()
    assert structure(sn.model) == start
