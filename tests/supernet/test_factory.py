"""make_supernet: names, modules and checkpoints in; clear errors for bad input."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

import hybridmoo as hm
from hybridmoo.errors import ConfigError
from hybridmoo.supernet import Supernet, make_supernet, recalibrate_bn
from hybridmoo.testing.spaces import fp32

torch.set_num_threads(1)


@pytest.mark.parametrize(("name", "family"), [("test_resnet", "resnet"),
                                              ("test_efficientnet", "mobilenet_efficientnet"),
                                              ("test_convnext", "convnext"),
                                              ("test_vit", "vit")])
def test_a_timm_name_picks_its_family_spec(name, family):
    sn = hm.make_supernet(name, num_classes=7, image_size=32)
    assert isinstance(sn, Supernet) and sn.spec.family == family
    assert sn.model.num_classes == 7 and sn.image_size == 32
    assert sn(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_vit_dims_cover_heads_mlp_depth_and_quantization():
    sn = make_supernet("test_vit", image_size=32)
    names = set(sn.space.names)
    assert {"blocks.0.heads", "blocks.0.mlp", "blocks.depth", "blocks.0.w_bits",
            "blocks.0.a_bits"} <= names
    assert sn.space.dims["blocks.0.heads"].to_json() == {"int_range": [1, 2]}
    net = sn.extract({**fp32(sn.largest()), "blocks.0.heads": 1})
    attn = net.blocks[0].attn
    assert attn.num_heads == 1 and attn.qkv.out_features == 3 * attn.head_dim
    assert attn.proj.in_features == attn.head_dim


def test_unknown_family_and_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match="no supernet spec serves model 'resnet101'"):
        make_supernet("resnet101")
    with pytest.raises(ConfigError, match="did you mean 'test_resnet'"):
        make_supernet("test_resnt")
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ConfigError, match="pass spec="):
        make_supernet(plain)
    with pytest.raises(ConfigError, match="does not exist"):
        make_supernet("test_resnet", spec="no/such/spec.yaml")
    with pytest.raises(ConfigError, match="num_classes"):
        make_supernet("test_resnet", num_classes=0)
    with pytest.raises(ConfigError, match="model must be"):
        make_supernet(3)


def test_a_module_is_used_in_place_with_a_spec_file(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text("family: mine\nmodels: [anything]\nstages: 'layer\\d+'\n"
                    "depth: {min_keep: 0}\nwidth: {ratios: [0.5, 1.0], stream: false}\n")
    model = timm.create_model("test_resnet", num_classes=10, layers=(2, 1, 1, 1))
    sn = make_supernet(model, spec=spec, image_size=32)
    assert sn.model is model and sn.spec.family == "mine"
    assert set(sn.space.names) == {"layer1.depth", "layer1.0.width", "layer1.1.width",
                                   "layer2.0.width", "layer3.0.width", "layer4.0.width"}


def test_wrong_image_size_for_a_fixed_size_model():
    model = timm.create_model("test_vit", img_size=32, dynamic_img_size=False)
    with pytest.raises(ConfigError, match="built for 32x32"):
        make_supernet(model, image_size=64)
    sn = make_supernet(model)
    assert sn.image_size == 32
    with pytest.raises(ConfigError, match="takes 32x32 images"):
        sn(torch.randn(1, 3, 48, 48))


def test_quantized_config_needs_calibration():
    sn = make_supernet("test_resnet", image_size=32)
    config = {**sn.largest(), "layer1.0.a_bits": 8}
    with pytest.raises(ConfigError, match="calibrate"):
        sn.set_active(config)
    with pytest.raises(ConfigError, match="calibrate"):
        sn.extract(config)
    sn.calibrate([torch.randn(4, 3, 32, 32)])
    sn.set_active(config)
    assert sn.active == config


def _save(model, path, metadata=None):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata=metadata)


def test_checkpoints_load_from_local_files(tmp_path):
    source = timm.create_model("test_resnet", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = source.forward_features(x).flatten(1).sort().values

    def loaded(sn) -> bool:  # the source's features (their channels are stored reordered)
        with torch.no_grad():
            ours = sn.eval().model.forward_features(x).flatten(1).sort().values
        return torch.allclose(ours, features, atol=1e-5)

    # safetensors naming its architecture in its metadata
    path = tmp_path / "a.safetensors"
    _save(source, path, {"architecture": "test_resnet"})
    sn = make_supernet(str(path), image_size=32)
    assert loaded(sn)
    assert sn.model.num_classes == 5
    # a torch file with a timm config.json beside it, fine-tuned to another class count
    folder = tmp_path / "hub"
    folder.mkdir()
    torch.save({"state_dict": source.state_dict()}, folder / "model.pth")
    (folder / "config.json").write_text(json.dumps({"architecture": "test_resnet"}))
    sn = make_supernet(folder / "model.pth", num_classes=3, image_size=32)
    assert loaded(sn)
    assert sn.model.num_classes == 3
    # a name plus checkpoint=
    sn = make_supernet("test_resnet", checkpoint=path, image_size=32)
    assert loaded(sn)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    source = timm.create_model("test_resnet", num_classes=5)
    anonymous = tmp_path / "anon.safetensors"
    _save(source, anonymous)
    with pytest.raises(ConfigError, match="does not name its architecture"):
        make_supernet(anonymous)
    with pytest.raises(ConfigError, match="does not fit"):
        make_supernet("test_efficientnet", checkpoint=anonymous)
    pickled = tmp_path / "object.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(ConfigError, match="weights_only=True"):
        make_supernet("test_resnet", checkpoint=pickled)
    with pytest.raises(ConfigError, match="does not exist"):
        make_supernet(tmp_path / "missing.safetensors")


def test_recalibrate_bn_sets_the_exact_average_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
    batches = [torch.randn(8, 3, 4, 4) + i for i in range(3)]
    net.train()
    momentum = net[1].momentum
    assert recalibrate_bn(net, [(b, None) for b in batches]) == 3
    feats = [net[0](b).detach() for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert net.training and net[1].momentum == momentum
    with pytest.raises(ConfigError):
        recalibrate_bn(net, [])


def test_recalibrated_subnet_still_runs():
    sn = make_supernet("test_efficientnet", image_size=32)
    net = sn.extract(fp32(sn.smallest()))
    recalibrate_bn(net, [torch.randn(4, 3, 32, 32) for _ in range(2)])
    assert torch.isfinite(net(torch.randn(2, 3, 32, 32))).all()


def test_import_hybridmoo_stays_light_and_exports_lazily():
    import subprocess
    import sys

    code = ("import sys, hybridmoo as hm; assert 'torch' not in sys.modules; "
            "f = hm.make_supernet; assert 'torch' in sys.modules; "
            "from hybridmoo.supernet import make_supernet; assert f is make_supernet; "
            "assert hm.train_supernet.__name__ == 'train_supernet'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_stage_granularity_shares_one_ratio_and_one_policy_per_stage(tmp_path):
    spec = tmp_path / "stages.yaml"
    spec.write_text("family: s\nmodels: [x]\nstages: 'layer\\d+'\n"
                    "width: {granularity: stage, stream: false}\n"
                    "quant: {granularity: stage, w_bits: [8, 32], a_bits: [32]}\n")
    model = timm.create_model("test_resnet", num_classes=10, layers=(2, 1, 2, 1))
    sn = make_supernet(model, spec=spec, image_size=32).eval()
    assert list(sn.space.names) == [f"layer{i}.{kind}" for i in range(1, 5)
                                    for kind in ("width", "w_bits")]
    config = {**sn.smallest(), **{f"layer{i}.w_bits": 32 for i in range(1, 5)}}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert float((sn(x, config) - sn.extract(config)(x)).abs().max()) <= 1e-4
    plan = sn.plan({**sn.largest(), "layer3.w_bits": 8})
    assert set(plan.quant) == {"layer3.0.conv1", "layer3.0.conv2", "layer3.0.conv3",
                               "layer3.0.downsample.1", "layer3.1.conv1", "layer3.1.conv2",
                               "layer3.1.conv3"}
