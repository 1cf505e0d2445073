"""SubnetEvaluator: the same accuracy as training's evaluate_subnet, real latency, pickling,
predicted latency, and the command line's profile."""

import pickle

import pytest
import yaml

from hybridmoo.cli import main
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import LatencyModel, LayerCost, SubnetEvaluator
from hybridmoo.supernet import TrainConfig, evaluate_subnet

OPTIONS = {"batch_size": 32, "bn_batches": 2, "repeats": 3, "warmup": 1, "seed": 0}


@pytest.fixture(scope="module")
def evaluator(supernet, data):
    return SubnetEvaluator(supernet, data, **OPTIONS)


def test_objectives_carry_units(evaluator):
    assert [(o.name, o.direction, o.unit) for o in evaluator.objectives] == [
        ("accuracy", "max", "%"), ("latency_ms", "min", "ms"), ("size_bytes", "min", "B")]


@pytest.mark.parametrize("bits", [32, 8])
def test_accuracy_equals_evaluate_subnet(evaluator, supernet, data, quantized, bits):
    config = quantized(bits, bits)
    out = evaluator(config)
    cfg = TrainConfig(batch_size=32, calib_batches=2, seed=0)
    assert out["accuracy"] == pytest.approx(100 * evaluate_subnet(supernet, config, data, cfg))
    assert out["latency_ms"] > 0 and out["size_bytes"] > 0 and out["macs"] > 0
    assert out["latency_kind"] == ("torch" if bits == 32 else "onnxruntime-int8")
    assert out["bn_recal_s"] > 0 and out["eval_s"] > 0 and out["device"]


def test_evaluator_pickles_and_works_after_unpickling(evaluator, supernet):
    config = supernet.smallest()
    before = evaluator(config)
    clone = pickle.loads(pickle.dumps(evaluator))
    after = clone(config)
    for key in ("accuracy", "size_bytes", "macs", "latency_kind"):
        assert after[key] == before[key]


def test_measure_network_on_a_built_network(evaluator, supernet):
    out = evaluator.measure_network(supernet.extract(supernet.largest()))
    assert {"accuracy", "latency_ms", "size_bytes", "macs", "eval_s"} <= set(out)
    assert "bn_recal_s" not in out


def test_predicted_latency(supernet, data):
    model = _fitted_for(supernet)
    evaluator = SubnetEvaluator(supernet, data, latency=model, **OPTIONS)
    out = evaluator(supernet.largest())
    assert out["latency_kind"] == "predicted-torch" and out["latency_ms"] > 0


def test_refuses_another_models_latency_table(supernet, data):
    model = _fitted_for(supernet)
    model.fingerprint = "test_efficientnet:0123"
    with pytest.raises(ConfigError, match="built for test_efficientnet"):
        SubnetEvaluator(supernet, data, latency=model)


@pytest.mark.parametrize("kwargs, match", [
    ({"device": "tpu"}, "device"), ({"split": "holdout"}, "split"),
    ({"repeats": 0}, "repeats"), ({"latency": "guess"}, "latency"),
    ({"runtime": "tensorrt"}, "runtime")])
def test_bad_options(supernet, data, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SubnetEvaluator(supernet, data, **kwargs)


def test_cli_profile_writes_a_model(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": "test_resnet", "image_size": 32,
                                      "run_dir": "run"}))
    out = tmp_path / "lat.json"
    code = main(["profile", "--config", str(config), "--out", str(out), "--samples", "4",
                 "--test-samples", "3", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "Kendall tau" in printed and "CV" in printed
    assert LatencyModel.load(out).quality["test_samples"] == 3


def test_cli_profile_refuses_a_missing_device(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": "test_resnet", "image_size": 32}))
    out = tmp_path / "lat.json"
    code = main(["profile", "--config", str(config), "--out", str(out), "--device", "cuda:7"])
    assert code == 2 and "device" in capsys.readouterr().err
    assert not out.exists()


def _fitted_for(supernet):
    from hybridmoo.evaluate import supernet_fingerprint

    kinds = ("conv", "linear", "norm")
    samples = [({f"{k}{i}": LayerCost(k, 1e5 * (i + 1), 1.0) for k in kinds for i in range(n)},
                "torch", 0.1 * n) for n in range(1, 4)]
    return LatencyModel.fit(samples, fingerprint=supernet_fingerprint(supernet), device="cpu")
