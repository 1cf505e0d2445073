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

TINY = {
    "supernet": {"model": "test_resnet", "image_size": 32, "steps": 8, "batch_size": 32,
                 "save_every": 4},
    "evaluation": {"repeats": 3, "warmup": 1},
    "max_evals": 6, "algorithm": "random", "seed": 0,
    "refine": {"every": 3, "survivors": 2, "steps": 3, "recovery_steps": 3, "front_steps": 4},
}


def tiny(run_dir, **changes):
    return pipeline_config_from_dict({**TINY, **changes, "run_dir": str(run_dir)})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    return run_pipeline(tiny(run_dir), progress=False)


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
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in source.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


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
