"""Layer costs, the fitted latency model (file round trip, refusals, gradients) and profile."""

import json

import pytest
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import (
    LatencyModel,
    LayerCost,
    count_macs,
    layer_costs,
    profile,
    supernet_fingerprint,
)
from hybridmoo.supernet import make_supernet


def _model(**kw):
    samples = []
    for layers in range(1, 7):  # 0.05 ms per conv + 0.002 ms per MMAC + 0.1 ms (no weights)
        costs = {f"c{i}": LayerCost("conv", 1e6 * (i + layers), 0.0) for i in range(layers)}
        ms = 0.1 + sum(0.05 + 0.002 * float(c.macs) / 1e6 for c in costs.values())
        samples.append((costs, "torch", ms))
    return LatencyModel.fit(samples, fingerprint="toy:0", device="cpu model", **kw)


def _weights_model():
    samples = []  # 0.1 ms + per conv 0.05 ms + 0.002 ms per MMAC + 0.3 ms per million weights
    for layers in range(1, 5):
        for wide in (1, 3):
            costs = {f"c{i}": LayerCost("conv", 1e6 * (i + layers), 1e5 * wide * (i % 2 + 1))
                     for i in range(layers)}
            ms = 0.1 + sum(0.05 + 0.002 * c.macs / 1e6 + 0.3 * c.params / 1e6
                           for c in costs.values())
            samples.append((costs, "torch", ms))
    return LatencyModel.fit(samples, fingerprint="toy:0", device="cpu model")


def test_layer_costs_add_up_to_the_flop_counter(supernet, widths):
    x = torch.randn(1, 3, 32, 32)
    for ratio in (0.5, 1.0):
        net = supernet.extract(widths(ratio))
        costs = layer_costs(net, x)
        compute = sum(c.macs for c in costs.values() if c.kind != "norm")
        assert compute == count_macs(net, x)
        assert {c.kind for c in costs.values()} >= {"conv", "linear", "norm"}


def test_int8_layers_have_their_own_kind(supernet, quantized):
    costs = layer_costs(supernet.extract(quantized(8, 8)), torch.randn(1, 3, 32, 32))
    assert any(c.kind == "conv-int8" for c in costs.values())
    assert any(c.kind == "conv" for c in costs.values())  # the stem is not quantized


def test_fit_recovers_exact_coefficients():
    model = _model()
    table = model.tables["torch"]
    assert table.per_layer["conv"] == pytest.approx(0.05, abs=1e-6)
    assert table.per_mmac["conv"] == pytest.approx(0.002, abs=1e-7)
    assert table.intercept == pytest.approx(0.1, abs=1e-6)
    costs = {"a": LayerCost("conv", 3e6, 1.0)}
    assert model.predict_from_layers(costs) == pytest.approx(0.1 + 0.05 + 0.006, rel=1e-4)


def test_fit_recovers_the_per_parameter_cost():
    table = _weights_model().tables["torch"]
    assert table.per_mparam["conv"] == pytest.approx(0.3, abs=1e-5)
    assert table.per_layer["conv"] == pytest.approx(0.05, abs=1e-5)
    assert table.per_mmac["conv"] == pytest.approx(0.002, abs=1e-6)
    assert table.intercept == pytest.approx(0.1, abs=1e-5)


def test_fit_refuses_non_positive_measurements():
    with pytest.raises(ConfigError, match="> 0 ms"):
        LatencyModel.fit([({"a": LayerCost("conv", 1e6, 1.0)}, "torch", 0.0)],
                         fingerprint="toy:0", device="cpu")


def test_predict_from_layers_is_differentiable():
    model = _model()
    macs = torch.tensor(2e6, requires_grad=True)
    gate = torch.tensor(0.5, requires_grad=True)
    ms = model.predict_from_layers({"a": LayerCost("conv", macs, 1.0, gate)})
    assert isinstance(ms, torch.Tensor)
    ms.backward()
    assert macs.grad == pytest.approx(0.5 * 0.002 / 1e6, rel=1e-4)
    assert gate.grad == pytest.approx(0.05 + 0.002 * 2, rel=1e-4)
    params = torch.tensor(2e5, requires_grad=True)
    ms = _weights_model().predict_from_layers({"a": LayerCost("conv", 1e6, params, gate)})
    ms.backward()
    assert params.grad == pytest.approx(0.5 * 0.3 / 1e6, rel=1e-3)


def test_unknown_layer_kind_is_refused():
    with pytest.raises(ConfigError, match="attention"):
        _model().predict_from_layers({"x": LayerCost("attention", 1.0, 0.0)})


def test_save_load_round_trip(tmp_path):
    model = _model(batch_size=4)
    model.quality = {"kendall_tau": 0.95}
    path = model.save(tmp_path / "lat.json")
    assert [p.name for p in tmp_path.iterdir()] == ["lat.json"]
    loaded = LatencyModel.load(path, model_fingerprint="toy:0")
    assert loaded == model


def test_load_reads_format_1_files_without_parameter_costs(tmp_path):
    data = _weights_model().to_dict()
    data["format"] = 1
    for table in data["tables"].values():
        del table["per_mparam"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = LatencyModel.load(tmp_path / "old.json")
    assert old.tables["torch"].per_mparam == {}
    costs = {"a": LayerCost("conv", 1e6, 1e6)}
    new = _weights_model()
    assert old.predict_from_layers(costs) == pytest.approx(
        new.predict_from_layers(costs) - new.tables["torch"].per_mparam["conv"])


def test_load_refuses_another_models_table(tmp_path, supernet):
    path = _model().save(tmp_path / "lat.json")
    with pytest.raises(ConfigError, match="built for toy:0"):
        LatencyModel.load(path, model_fingerprint=supernet_fingerprint(supernet))


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("tables"), lambda d: d.update(format=99),
    lambda d: d["tables"]["torch"]["per_mmac"].update(conv="fast"),
    lambda d: d["tables"]["torch"]["per_mparam"].update(dwconv=1.0),
    lambda d: d.update(batch_size="one"), lambda d: d["tables"].update(tpu={})])
def test_load_refuses_malformed_files(tmp_path, edit):
    data = _model().to_dict()
    edit(data)
    path = tmp_path / "lat.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="malformed"):
        LatencyModel.load(path)


def test_load_refuses_missing_and_non_json_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyModel.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not a latency model"):
        LatencyModel.load(tmp_path / "bad.json")


def test_fingerprints_differ_between_models(supernet):
    other = make_supernet("test_efficientnet", num_classes=10, image_size=32)
    assert supernet_fingerprint(supernet) != supernet_fingerprint(other)
    assert supernet_fingerprint(supernet).startswith("test_resnet:")


def test_profile_fits_and_predicts(supernet, data, tmp_path):
    ranges = dict(supernet.act_ranges)
    result = profile(supernet, samples=8, test_samples=6, repeats=3, warmup=1, data=data,
                     progress=False)
    assert supernet.act_ranges == ranges  # the supernet is left as it was
    assert len(result.fit) == 8 and len(result.test) == 6
    assert {m.kind for m in result.fit} >= {"torch", "onnxruntime-int8"}
    assert -1.0 <= result.kendall_tau <= 1.0 and result.cv_median >= 0
    assert all(p > 0 for p in result.predicted_ms)
    model = LatencyModel.load(result.model.save(tmp_path / "lat.json"),
                              model_fingerprint=supernet_fingerprint(supernet))
    assert model.quality["test_samples"] == 6
    net = supernet.extract(supernet.largest())
    assert model.predict(net, torch.randn(1, 3, 32, 32)) > 0


def test_profile_refuses_a_missing_device(supernet):
    with pytest.raises(ConfigError, match="device"):
        profile(supernet, device="cuda:7" if torch.cuda.device_count() < 8 else "tpu",
                samples=4, test_samples=2)
