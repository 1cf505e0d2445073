"""The supernet pipeline end to end (train, search with refinement, export, report), its YAML
config, and resume."""

from __future__ import annotations

import json

import pytest

from hybridmoo.cli import main
from hybridmoo.errors import ConfigError, RunDirError
from hybridmoo.export import load_subnet, read_front
from hybridmoo.pipeline import run_pipeline
from hybridmoo.pipeline_config import pipeline_config_from_dict
from hybridmoo.testing.runs import TINY_PIPELINE, tiny_pipeline
from hybridmoo.testing.spaces import PlainDataset

TINY = TINY_PIPELINE
tiny = tiny_pipeline


@pytest.fixture
def finished(finished_pipeline):
    """The shared finished run (tests/conftest.py): read it, or copy it to change it."""
    return finished_pipeline


def test_every_stage_leaves_its_output(finished):
    history = finished.search.history
    assert sum(r.candidate.origin != "refine" for r in history) == 6
    refined = [r for r in history if r.candidate.origin == "refine"]
    assert refined and {r.info["round"] for r in refined} >= {1}
    for r in refined:
        if r.ok:
            assert (finished.run_dir / "refined" / r.key / "model.safetensors").is_file()
    assert finished.report is not None and finished.report.is_file()
    assert {o.name for o in finished.search.archive.objectives} == {
        "accuracy", "latency_ms", "size_bytes"}


def test_the_front_is_reported_on_the_test_split(finished):
    """The search selects on val; the export, its index and the report add test accuracy."""
    index = read_front(finished.export_dir)
    for point in index["points"]:
        assert point["metrics"]["accuracy"]["split"] == "val"
        assert point["metrics"]["test_accuracy"]["split"] == "test"
    page = finished.report.read_text()
    assert "accuracy [%], val" in page and "accuracy [%], test" in page
    head = (finished.export_dir.parent / "front.csv").read_text().splitlines()[0]
    assert "test_accuracy [%]" in head


def test_exported_checkpoints_reproduce_the_journaled_accuracy(finished):
    from hybridmoo.data import make_data
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.supernet import load_supernet

    index = read_front(finished.export_dir)
    by_key = {r.key: r for r in finished.search.front}
    assert {p["key"] for p in index["points"]} == set(by_key)
    evaluator = SubnetEvaluator(load_supernet(finished.run_dir / "supernet"),
                                make_data("digits", 32), repeats=1, warmup=0, batch_size=32)
    point = index["points"][0]
    net = load_subnet(finished.export_dir.parent / point["path"])
    measured = evaluator.measure_network(net)
    assert measured["accuracy"] == pytest.approx(by_key[point["key"]].values["accuracy"])


def test_the_starting_model_is_measured_as_the_baseline(finished):
    """Built from a name, the baseline is the largest sub-network in FP32, measured by the
    search's evaluator once and kept in the run directory; every point is compared with it."""
    import html
    import io

    from rich.console import Console

    from hybridmoo.baseline import LARGEST, load_baseline
    from hybridmoo.cli_output import pipeline_summary

    baseline = load_baseline(finished.run_dir / "baseline.json")
    assert baseline == finished.baseline and baseline.source == LARGEST
    assert set(baseline.values) >= {"accuracy", "latency_ms", "size_bytes"}
    assert 0 < baseline.test["accuracy"] <= 100
    # the largest FP32 network is at least as large as any quantized or narrowed one
    assert all(r.values["size_bytes"] <= baseline.values["size_bytes"]
               for r in finished.search.front)
    buffer = io.StringIO()
    pipeline_summary(Console(file=buffer, width=200), finished, quiet=False, seconds=1.0)
    text = buffer.getvalue()
    assert f"baseline, {LARGEST}: accuracy" in text
    assert "x smaller" in text and "x faster" in text and " points" in text
    assert "fixed reference: the baseline and the first 10 evaluations" in text
    # front.json and the report hold it too, with every point against it
    index = read_front(finished.export_dir)
    assert index["baseline"] == baseline.to_json()
    assert index["hypervolume"]["value"] == pytest.approx(finished.hypervolume[0])
    assert "the baseline and the first 10" in index["hypervolume"]["reference"]
    for point in index["points"]:
        versus = point["vs_baseline"]["values"]
        assert versus["size_bytes"] == pytest.approx(
            baseline.values["size_bytes"] / point["metrics"]["size_bytes"]["value"])
        assert "x smaller" in point["vs_baseline"]["text"]
    page = finished.report.read_text()
    assert "vs baseline" in page and html.escape(LARGEST) in page
    assert "changed by refinement" in page


def test_a_finished_run_is_not_overwritten(finished):
    with pytest.raises(RunDirError, match="already holds a run"):
        run_pipeline(tiny(finished.run_dir), progress=False)


def test_resume_with_a_larger_budget_continues_the_search(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished.run_dir, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    more = run_pipeline(tiny(run_dir, max_evals=8), resume=True, progress=False)
    evolved = [r for r in more.search.history if r.candidate.origin != "refine"]
    assert len(evolved) == 8
    # the baseline is not measured again, and the reference the first run fixed stays: a
    # longer run, no lower hypervolume
    assert more.baseline == finished.baseline and finished.baseline.reference is not None
    assert more.hypervolume[0] >= finished.hypervolume[0]
    assert [r.key for r in more.search.history[:len(finished.search.history)]] == [
        r.key for r in finished.search.history]
    with pytest.raises(RunDirError, match="different"):
        run_pipeline(tiny(run_dir, seed=3), resume=True, progress=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"supernet": {"model": "test_resnet", "stepz": 3}}, "unknown key 'stepz'"),
    ({"evaluation": {"device": "cpu", "repeat": 3}}, "unknown key 'repeat'"),
    ({"objectives": ["accuracy", "speed"]}, "unknown objective 'speed'"),
    ({"objectives": ["latency_ms"]}, "must include accuracy"),
    ({"refine": {"every": 0}}, "every must be a positive int"),
    ({"refine": {"every": None, "final_share": 0.2}}, "set max_seconds"),
    ({"max_seconds": 60, "refine": {"final_share": 1.5}}, "final_share must lie in"),
    ({"max_seconds": 0}, "max_seconds must be a positive number"),
    ({"max_seconds": "1h"}, "max_seconds must be a number"),
    ({"refine": {"solver": "nope"}}, "nope"),
    ({"export": "yes"}, "export must be true or false"),
    ({"refine": {"front": "yes"}}, "front must be true or false"),
    ({"space": "digits-mlp"}, "unknown key 'space'"),
])
def test_bad_pipeline_configs_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        pipeline_config_from_dict({**TINY, **change, "run_dir": str(tmp_path)})


def test_a_time_budget_with_rounds_on_the_final_front(tmp_path):
    cfg = pipeline_config_from_dict({**TINY, "max_seconds": 90, "run_dir": str(tmp_path),
                                     "refine": {"every": None, "final_share": 0.25}})
    assert cfg.max_seconds == 90.0
    assert cfg.refine["every"] is None and cfg.refine["final_share"] == 0.25
    assert cfg.refine["survivors"] == 4 and cfg.refine["front"] is True  # the defaults


def test_run_dir_is_required():
    with pytest.raises(ConfigError, match="run_dir is required"):
        pipeline_config_from_dict(TINY)


def test_search_command_runs_a_pipeline_yaml(tmp_path, capsys):
    import yaml

    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({**TINY, "refine": None, "run_dir": "out"}))
    assert main(["search", "-c", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "exported checkpoints:" in out and "report:" in out
    front = json.loads((tmp_path / "out" / "export" / "front.json").read_text())
    assert front["points"]


def test_refinement_distils_from_the_users_model(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from hybridmoo.data import digits
    from hybridmoo.pipeline import _user_model

    assert _user_model(tiny(tmp_path / "a"), digits(32)) is None  # random init: none
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(path), metadata={"architecture": "test_resnet"})
    cfg = tiny(tmp_path / "b", supernet={**TINY["supernet"], "checkpoint": str(path)})
    teacher = _user_model(cfg, digits(32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the user's model (its channels stored in the supernet's order)
        assert torch.allclose(teacher(x), source.eval()(x), atol=1e-5)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    # and the user's model is the baseline every point is compared with
    from hybridmoo.baseline import USER_MODEL
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.pipeline import _baseline
    from hybridmoo.supernet import make_supernet

    sn = make_supernet("test_resnet", 10, image_size=32, checkpoint=str(path))
    evaluator = SubnetEvaluator(sn, digits(32), repeats=2, warmup=1)
    (tmp_path / "b").mkdir()
    baseline = _baseline(cfg, tmp_path / "b", sn, digits(32), evaluator, teacher)
    assert baseline.source == USER_MODEL
    assert baseline.values["size_bytes"] == evaluator.measure_network(teacher)["size_bytes"]


def test_evaluation_settings_name_every_evaluator_option():
    """The typed record and SubnetEvaluator agree on the options (no ** tunnel between)."""
    import inspect
    from dataclasses import fields

    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.evaluation_settings import EvaluationSettings

    options = set(inspect.signature(SubnetEvaluator).parameters) - {
        "supernet", "data", "latency", "seed"}
    assert {f.name for f in fields(EvaluationSettings)} - {"latency_model"} == options
    with pytest.raises(ConfigError, match="split"):
        EvaluationSettings(split="holdout")
    assert EvaluationSettings.from_dict({"threads": 2, "runtime": "torch"}).to_dict() == {
        "threads": 2, "runtime": "torch"}


# -- data from Python, and the pipeline's device

DigitsDataset = PlainDataset  # digits as the user's own map-style Dataset


def digits_datasets(shift=0.0):
    """Train (as a DataLoader: its dataset is used) / val / test of digits from Python."""
    from torch.utils.data import DataLoader

    from hybridmoo.data import digits

    d = digits(32)
    return (DataLoader(DigitsDataset(d.train), batch_size=3, shuffle=True),
            DigitsDataset(d.val, shift), DigitsDataset(d.test))


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    data = digits_datasets()
    cfg = tiny(tmp_path_factory.mktemp("python") / "run", device="cpu",
               supernet={**TINY["supernet"], "num_classes": 10})
    return run_pipeline(cfg, data=data, progress=False), data


def test_a_pipeline_on_python_datasets_trains_searches_and_exports(python_run):
    from hybridmoo.data import as_image_data, data_record
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.supernet import load_supernet

    result, data = python_run
    settings = json.loads((result.run_dir / "pipeline.json").read_text())
    record = settings["data"]
    assert record["python"] is True and record["sizes"] == [1078, 359, 360]
    assert settings["train"]["data"] == record and settings["device"] == "cpu"
    assert record == data_record(as_image_data(data, num_classes=10))
    assert sum(r.candidate.origin != "refine" for r in result.search.history) == 6
    refined = [r for r in result.search.history if r.candidate.origin == "refine"]
    assert refined and all(r.ok or r.info.get("rolled_back") for r in refined), [
        r.reason for r in refined]
    index = read_front(result.export_dir)
    assert index["points"] and all(
        p["metrics"]["test_accuracy"]["split"] == "test" for p in index["points"])
    evaluator = SubnetEvaluator(load_supernet(result.run_dir / "supernet"), data, repeats=1,
                                warmup=0, batch_size=32)
    by_key = {r.key: r for r in result.search.front}
    point = index["points"][0]
    measured = evaluator.measure_network(load_subnet(result.export_dir.parent / point["path"]))
    assert measured["accuracy"] == pytest.approx(by_key[point["key"]].values["accuracy"])


def test_resuming_or_exporting_a_python_data_run_needs_the_same_data(python_run, tmp_path,
                                                                     capsys):
    import shutil

    from hybridmoo.export import export_run

    result, data = python_run
    run_dir = tmp_path / "run"
    shutil.copytree(result.run_dir, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    moved = tiny(run_dir, device="cpu", supernet={**TINY["supernet"], "num_classes": 10},
                 max_evals=7)
    with pytest.raises(ConfigError, match=r"came from Python \(train / val / test: 1078 / 359 "
                                          r"/ 360 examples.*pass the same data again"):
        run_pipeline(moved, resume=True, progress=False)
    with pytest.raises(RunDirError, match="different"):
        run_pipeline(moved, data=digits_datasets(shift=0.5), resume=True, progress=False)
    assert main(["export", str(run_dir)]) == 2
    assert "came from Python" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the data given is not this run's"):
        export_run(run_dir, data=digits_datasets(shift=0.5))
    assert read_front(export_run(run_dir, data=data))["points"]
    more = run_pipeline(moved, data=data, resume=True, progress=False)
    assert sum(r.candidate.origin != "refine" for r in more.search.history) == 7


def test_bad_python_data_fails_before_any_file_is_written(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    bad = [(torch.zeros(3, 16, 16), 1)] * 40
    with pytest.raises(ConfigError, match="cannot tell the number of classes"):
        run_pipeline(tiny(run_dir), data=(bad, bad), progress=False)
    cfg = tiny(run_dir, supernet={**TINY["supernet"], "num_classes": 2})
    with pytest.raises(ConfigError, match="images are 16x16 but image_size is 32"):
        run_pipeline(cfg, data=(bad, bad), progress=False)
    with pytest.raises(ConfigError, match="data must be an ImageData"):
        run_pipeline(cfg, data=bad, progress=False)
    assert not run_dir.exists()


def test_one_device_for_the_whole_pipeline(tmp_path, caplog):
    import logging

    from hybridmoo.evaluation_settings import EvaluationSettings
    from hybridmoo.pipeline_config import PipelineConfig

    assert tiny(tmp_path).device == "cpu" and tiny(tmp_path).evaluation.device is None
    cfg = tiny(tmp_path, device="cuda:1")
    assert cfg.device == "cuda:1" and cfg.evaluation_settings().device == "cuda:1"
    with caplog.at_level(logging.WARNING):
        old = tiny(tmp_path, evaluation={"device": "cuda", "repeats": 3})
    assert old.device == "cuda" and old.evaluation.device is None
    assert "evaluation.device is now the top-level key device" in caplog.text
    with pytest.raises(ConfigError, match=r"evaluation\.device 'cuda' and device 'cpu' disagree"):
        tiny(tmp_path, device="cpu", evaluation={"device": "cuda"})
    with pytest.raises(ConfigError, match="device must be a non-empty string"):
        tiny(tmp_path, device=3)
    with pytest.raises(ConfigError, match=r"evaluation\.device 'cuda' differs from device 'cpu'"):
        PipelineConfig(train=cfg.train, run_dir=tmp_path,
                       evaluation=EvaluationSettings(device="cuda"))


@pytest.mark.parametrize(("changes", "message"), [
    ({"device": "cuda"}, "'cuda' is not available: this machine has 0 CUDA device"),
    ({"evaluation": {"device": "cuda"}}, "'cuda' is not available"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_an_unavailable_device_fails_before_any_file_is_written(tmp_path, changes, message):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        run_pipeline(tiny(run_dir, **changes), progress=False)
    assert not run_dir.exists()


@pytest.mark.gpu
def test_the_pipeline_on_cuda(tmp_path):
    """Training, evaluation and refinement on the GPU (``-m gpu`` on a CUDA machine)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = run_pipeline(tiny(tmp_path / "run", device="cuda"), progress=False)
    evaluated = [r for r in result.search.history if r.candidate.origin != "refine"]
    assert evaluated and all(r.ok for r in evaluated)
    assert {r.info["device"] for r in evaluated} == {torch.cuda.get_device_name(0)}
    refined = [r for r in result.search.history if r.candidate.origin == "refine"]
    assert refined and not [r.reason for r in refined
                            if not r.ok and not r.info.get("rolled_back")]
    assert read_front(result.export_dir)["points"]
