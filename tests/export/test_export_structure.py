"""describe / rebuild: a pruned, quantized timm sub-network rebuilt from JSON alone."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.export import describe, rebuild
from hybridmoo.export.structure import load_state
from hybridmoo.quant import FakeQuant
from hybridmoo.supernet import make_supernet

torch.set_num_threads(1)
FAMILIES = ("test_resnet", "test_efficientnet", "test_convnext", "test_vit")


@pytest.fixture(scope="module")
def supernets():
    made = {}
    for name in FAMILIES:
        sn = make_supernet(name, num_classes=10, image_size=32)
        sn.calibrate([torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))])
        made[name] = sn
    return made


def _configs(sn):
    rng = np.random.default_rng(7)
    return [sn.smallest(), *(sn.space.sample(rng) for _ in range(3))]


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuilt_network_computes_what_the_extracted_one_does(supernets, family):
    sn = supernets[family]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kinds = set()
    for config in _configs(sn):
        net = sn.extract(config)
        description = json.loads(json.dumps(describe(net)))  # survives JSON as is
        kinds |= {k for k in ("removed", "channels", "quant") if description[k]}
        rebuilt = load_state(rebuild(description), net.state_dict(), "test")
        assert [type(m) for m in rebuilt.modules()] == [type(m) for m in net.modules()]
        with torch.no_grad():
            assert (rebuilt(x) - net(x)).abs().max() <= 1e-5
        assert sum(p.numel() for p in rebuilt.parameters()) == \
            sum(p.numel() for p in net.parameters())
    assert {"channels", "quant"} <= kinds  # the configs did prune and quantize


def test_removed_blocks_heads_and_quant_policy_are_recorded(supernets):
    sn = supernets["test_vit"]
    config = {**sn.largest(), "blocks.depth": sn.space.dims["blocks.depth"].value(0),
              "blocks.0.heads": 1, "blocks.0.w_bits": 4, "blocks.0.a_bits": 8}
    net = sn.extract(config)
    d = describe(net)
    assert d["architecture"] == "test_vit" and d["kwargs"]["img_size"] == 32
    assert "blocks.5" in d["removed"]
    assert d["heads"]["blocks.0.attn"]["num_heads"] == 1
    assert d["quant"]["blocks.0.attn.qkv"] == {"w_bits": 4, "a_bits": 8}
    rebuilt = rebuild(d)
    assert isinstance(rebuilt.blocks[5], nn.Identity)
    assert rebuilt.blocks[0].attn.num_heads == 1
    assert isinstance(rebuilt.blocks[0].attn.qkv, FakeQuant)
    assert rebuilt.blocks[0].attn.qkv.w_bits == 4


def test_an_unpruned_timm_model_has_an_empty_description():
    import timm

    d = describe(timm.create_model("test_resnet", num_classes=7))
    assert d["kwargs"]["num_classes"] == 7
    assert not (d["removed"] or d["channels"] or d["tensors"] or d["heads"] or d["quant"])


def test_a_model_trained_with_drop_path_is_rebuilt_without_it():
    import timm

    model = timm.create_model("test_convnext", num_classes=10, drop_path_rate=0.1)
    sn = make_supernet(model, image_size=32)
    net = sn.extract({**sn.largest(), "stages.2.blocks.depth": 1})
    rebuilt = load_state(rebuild(describe(net)), net.state_dict(), "test")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (rebuilt(x) - net(x)).abs().max() <= 1e-5


def test_a_module_that_is_not_a_timm_model_is_refused():
    with pytest.raises(ConfigError, match="not a timm model"):
        describe(nn.Sequential(nn.Conv2d(3, 4, 3)))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(architecture="no_such_model"), "not a timm model name"),
    (lambda d: d.update(removed=["../../etc"]), "not a module"),
    (lambda d: d.update(removed=[""]), "not a module"),
    (lambda d: d["kwargs"].update(pretrained=True), "unknown creation argument"),
    (lambda d: d["kwargs"].update(num_classes=True), "must be a positive int"),
    (lambda d: d["channels"].update({"fc": {"out": 10, "in": 10_000}}), "cannot grow"),
    (lambda d: d["heads"].update({"fc": {"__class__": 1}}), "may only set"),
    (lambda d: d.update(format=99), "unknown format"),
])
def test_a_bad_description_is_a_config_error(supernets, change, message):
    d = json.loads(json.dumps(describe(supernets["test_resnet"].extract(
        supernets["test_resnet"].smallest()))))
    change(d)
    with pytest.raises(ConfigError, match=message):
        rebuild(d)


def test_weights_that_do_not_fit_the_structure_are_refused(supernets):
    sn = supernets["test_resnet"]
    small, large = sn.extract(sn.smallest()), sn.extract(sn.largest())
    with pytest.raises(ConfigError, match="do not fit the recorded structure"):
        load_state(rebuild(describe(small)), large.state_dict(), "weights")
