"""Supernet training: sandwich steps, checkpoints, exact resume, the CLI command, data."""

import json

import numpy as np
import pytest
import torch

from hybridmoo.cli import main
from hybridmoo.data import digits, epoch_batches, make_data
from hybridmoo.errors import ConfigError
from hybridmoo.supernet.checkpoint import META_FILE, WEIGHTS_FILE, load_supernet
from hybridmoo.supernet.train_config import TrainConfig, load_train_config
from hybridmoo.supernet.training import evaluate_subnet, train_supernet
from hybridmoo.testing.spaces import PlainDataset

torch.set_num_threads(1)
TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 16, "steps": 4,
        "random_subnets": 1, "calib_batches": 1, "save_every": 2, "warmup_steps": 1}


def test_training_lowers_the_loss_and_reports_subnet_accuracy():
    result = train_supernet({**TINY, "steps": 12, "save_every": 0}, progress=False)
    assert result.step == 12 and len(result.losses) == 12
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4])
    assert set(result.metrics) == {"largest_val_accuracy", "smallest_val_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.run_dir is None


def test_the_users_model_is_the_distillation_teacher(tmp_path):
    """From a user's checkpoint, sub-networks learn from the user's model (a frozen copy taken
    before training), not from the supernet's largest sub-network as it drifts."""
    import timm
    from safetensors.torch import save_file

    from hybridmoo.supernet.training import prepare_training, sandwich_step, user_teacher

    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(path), metadata={"architecture": "test_resnet"})
    cfg = TrainConfig.from_dict({**TINY, "checkpoint": str(path)})
    data, sn = prepare_training(cfg)
    teacher = user_teacher(cfg, sn)
    assert user_teacher(TrainConfig.from_dict(TINY), sn) is None  # random init: no teacher
    x, y = next(epoch_batches(data.train, 16, 0, 0))
    with torch.no_grad():  # the user's model (its channels stored in the supernet's order)
        assert torch.allclose(teacher.eval()(x), source.eval()(x), atol=1e-5)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    optimizer = torch.optim.SGD(sn.parameters(), lr=0.1)
    smallest = {**sn.smallest(), **{n: 32 for n in sn.space.names if n.endswith("_bits")}}
    for _ in range(2):
        sandwich_step(sn, optimizer, x, y, [smallest], True, teacher=teacher)
    assert len(calls) == 2  # one teacher forward per step
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in frozen.items())
    assert not torch.equal(sn.model.state_dict()["conv1.0.weight"],
                           frozen["conv1.0.weight"])  # the supernet trained


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    whole = train_supernet({**TINY, "run_dir": str(tmp_path / "a")}, progress=False)
    stopped = train_supernet({**TINY, "run_dir": str(tmp_path / "b")}, progress=False,
                             stop_at=3)
    assert stopped.step == 3 and not stopped.metrics
    resumed = train_supernet({**TINY, "run_dir": str(tmp_path / "b")}, resume=True,
                             progress=False)
    assert resumed.losses == whole.losses
    a, b = whole.supernet.model.state_dict(), resumed.supernet.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match=r"changed config.*lr"):
        train_supernet({**TINY, "lr": 0.1, "run_dir": str(tmp_path / "b")}, resume=True,
                       progress=False)


def test_a_checkpoint_rebuilds_the_supernet(tmp_path):
    result = train_supernet({**TINY, "run_dir": str(tmp_path)}, progress=False)
    info = json.loads((tmp_path / META_FILE).read_text())
    assert info["meta"]["step"] == 4 and info["meta"]["metrics"] == result.metrics
    sn = load_supernet(tmp_path).eval()
    original = result.supernet.eval()
    x = torch.randn(2, 3, 32, 32)
    config = {**original.smallest(), **{k: 32 for k in original.space.names if "bits" in k}}
    with torch.no_grad():
        assert torch.equal(sn(x, config), original(x, config))
    raw = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="does not match"):
        load_supernet(tmp_path)
    with pytest.raises(ConfigError, match="no supernet checkpoint"):
        load_supernet(tmp_path / "nothing")


def test_plain_training_and_a_quantized_evaluation():
    result = train_supernet({**TINY, "sandwich": False, "save_every": 0}, progress=False)
    sn, cfg = result.supernet, TrainConfig(**{**TINY, "save_every": 0})
    quantized = {**sn.largest(), **{k: 8 for k in sn.space.names if k.endswith("_bits")}}
    accuracy = evaluate_subnet(sn, quantized, result.data, cfg)
    assert 0.0 <= accuracy <= 1.0 and sn.act_ranges


@pytest.mark.parametrize(("change", "message"), [
    ({"stepz": 3}, "did you mean 'steps'"), ({"steps": 0}, "steps must be an int >= 1"),
    ({"lr": -1}, "lr must be a positive number"), ({"distill": "yes"}, "true or false"),
    ({"data": "mnist"}, "'digits' or"), ({"model": 3}, "non-empty string"),
])
def test_bad_training_configs_are_clear_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({**TINY, **change}, source="train.yaml")


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer 'nope'"):
        train_supernet({**TINY, "optimizer": "nope"}, progress=False)


def test_train_supernet_command(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()) + "run_dir: out\n")
    assert load_train_config(config).run_dir == str(tmp_path / "out")
    assert main(["train-supernet", "--config", str(config), "--steps", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "trained: 2 steps" in out and "largest val accuracy" in out
    assert (tmp_path / "out" / META_FILE).is_file()
    assert main(["train-supernet", "--config", str(config), "--steps", "3", "-q",
                 "--resume"]) == 0
    assert "trained: 3 steps" in capsys.readouterr().out
    config.write_text("model: test_resnet\nbatch_sise: 4\n")
    assert main(["train-supernet", "--config", str(config)]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err


def test_digits_split_is_fixed_and_upsampled():
    data = digits(32)
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 1797 and sizes[0] == 1078 and data.num_classes == 10
    x, labels = data.train.tensors
    assert len(labels) == len(x) and x.shape[1:] == (3, 32, 32)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.equal(digits(32).val.tensors[1], data.val.tensors[1])
    first = [b[1] for b in epoch_batches(data.train, 100, seed=0, epoch=1)]
    again = [b[1] for b in epoch_batches(data.train, 100, seed=0, epoch=1, skip=2)]
    assert len(first) == 10
    assert all(torch.equal(a, b) for a, b in zip(first[2:], again, strict=True))


def test_image_folder_data_through_timm(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 24), (40 * i, 90, 200)).save(folder / f"{i}.png")
    data = make_data({"root": str(tmp_path)}, 32)
    assert data.num_classes == 2 and len(data.train) == 6 and len(data.test) == 6
    x, labels = next(epoch_batches(data.train, 4, seed=0, epoch=0))
    assert x.shape == (4, 3, 32, 32) and labels.dtype == torch.long
    with pytest.raises(ConfigError, match="'train' sub-folder"):
        make_data({"root": str(tmp_path / "val")}, 32)


DigitsDataset = PlainDataset  # digits as the user's own map-style Dataset


def test_training_on_python_datasets_records_them_for_resume(tmp_path):
    from torch.utils.data import DataLoader

    from hybridmoo.data import data_record

    d = digits(32)
    data = (DataLoader(DigitsDataset(d.train), batch_size=5), DigitsDataset(d.val),
            DigitsDataset(d.test))
    cfg = {**TINY, "num_classes": 10, "run_dir": str(tmp_path), "data": "fashion-mnist"}
    stopped = train_supernet(cfg, data=data, progress=False, stop_at=2)
    assert stopped.step == 2 and stopped.data.train is data[0].dataset
    saved = json.loads((tmp_path / META_FILE).read_text())["meta"]["config"]["data"]
    assert saved == data_record(stopped.data) and saved["sizes"] == [1078, 359, 360]
    with pytest.raises(ConfigError, match="came from Python"):
        train_supernet(cfg, resume=True, progress=False)  # the config's fashion-mnist: refused
    other = (DigitsDataset(d.train), DigitsDataset(d.val, shift=0.5), DigitsDataset(d.test))
    with pytest.raises(ConfigError, match=r"changed config \(data\)"):
        train_supernet(cfg, data=other, resume=True, progress=False)
    resumed = train_supernet(cfg, data=data, resume=True, progress=False)
    assert resumed.step == 4 and set(resumed.metrics) == {"largest_val_accuracy",
                                                          "smallest_val_accuracy"}
    whole = train_supernet({**cfg, "run_dir": None}, data=data, progress=False)
    assert resumed.losses == whole.losses  # the same batches as an uninterrupted run


@pytest.mark.parametrize(("device", "message"), [
    ("gpu", "unknown device 'gpu'"), ("cuda", "is not available"),
    ("cuda:7", "is not available")])
def test_an_unavailable_device_fails_before_training(tmp_path, device, message):
    if device != "gpu" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    with pytest.raises(ConfigError, match=message):
        train_supernet({**TINY, "run_dir": str(tmp_path / "run")}, device=device,
                       progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_training_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = train_supernet({**TINY, "run_dir": str(tmp_path)}, device="cuda", progress=False)
    assert all(p.device.type == "cuda" for p in result.supernet.parameters())
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    cpu = train_supernet(TINY, progress=False)  # the same run on the CPU: close, not equal
    assert abs(result.losses[0] - cpu.losses[0]) < 1e-3
    assert load_supernet(tmp_path) is not None
