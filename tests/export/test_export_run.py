"""export_run: the front of a supernet run directory (supernet/, refined/, pipeline.json)
exported so that every checkpoint reproduces the accuracy its journal recorded."""

import json

import onnx
import pytest
import torch
from onnx import numpy_helper

from hybridmoo import search
from hybridmoo.cli import main
from hybridmoo.data import digits
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate import SubnetEvaluator, device_name
from hybridmoo.export import (
    export_run,
    load_subnet,
    read_front,
    read_manifest,
    save_network,
)
from hybridmoo.export.run import read_pipeline
from hybridmoo.journal import Journal
from hybridmoo.objectives import EvalResult
from hybridmoo.space import Candidate
from hybridmoo.supernet import make_supernet, save_checkpoint
from hybridmoo.supernet.training import accuracy, calibration_batches, prepare_subnet

torch.set_num_threads(1)
PIPELINE = {"data": "digits", "image_size": 32, "batch_size": 32, "bn_batches": 2, "seed": 0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small supernet run measured by the real evaluator: 4 sub-networks and one refined
    network (with new weights, and a size that puts it on the front)."""
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    sn = make_supernet("test_resnet", num_classes=10, image_size=32)
    save_checkpoint(run_dir / "supernet", sn)
    (run_dir / "pipeline.json").write_text(json.dumps(PIPELINE))
    evaluator = SubnetEvaluator(sn, digits(32), batch_size=32, bn_batches=2, seed=0,
                                repeats=1, warmup=0)
    result = search(sn.space, evaluator, evaluator.objectives, algorithm="random", max_evals=4,
                    seed=0, run_dir=run_dir, progress=False)
    parent = result.front[0]
    net = prepare_subnet(sn, parent.config, calibration_batches(digits(32), 32, 0, 2))
    with torch.no_grad():
        net.fc.weight.mul_(1.5)  # a stand-in for gradient refinement: new weights
    measured = evaluator.measure_network(net)
    values = {o.name: float(measured[o.name]) for o in evaluator.objectives}
    # stand-in values: the smallest network and the slowest, so it is on the front beside
    # (and never dominates) the fastest sub-network, whatever the measured latencies are
    values["size_bytes"] = min(r.values["size_bytes"] for r in result.history) / 2
    values["latency_ms"] = 2 * max(r.values["latency_ms"] for r in result.history)
    refined = EvalResult(Candidate(parent.config, "refine", (parent.key,)), values,
                         info={"device": measured["device"]})
    save_network(net, run_dir / "refined" / refined.key, meta={"solver": "stand-in"})
    with Journal(run_dir) as journal:
        journal.append(refined)
    return run_dir


def test_every_exported_checkpoint_reproduces_its_journaled_accuracy(run_dir, capsys):
    assert main(["export", str(run_dir)]) == 0
    assert "exported" in capsys.readouterr().out
    front = read_front(run_dir / "export")
    origins = [p["origin"] for p in front["points"]]
    assert "refine" in origins and len(origins) >= 2
    data = digits(32)
    for p in front["points"]:
        directory = run_dir / "export" / p["path"]
        manifest = read_manifest(directory)
        assert manifest["device"] == device_name("cpu")
        assert manifest["metrics"]["accuracy"] == {"value": p["metrics"]["accuracy"]["value"],
                                                   "unit": "%", "direction": "max",
                                                   "split": "val"}
        # the evaluator's formula: percent of correct top-1 answers on the val split (what
        # the search selected on), and again on the test split (what is reported)
        net = load_subnet(directory)
        assert 100.0 * accuracy(net, data.val) == manifest["metrics"]["accuracy"]["value"]
        test = manifest["metrics"]["test_accuracy"]
        assert test["split"] == "test" and test == p["metrics"]["test_accuracy"]
        assert 100.0 * accuracy(net, data.test) == test["value"]
        int8 = any(v["a_bits"] == 8 for v in manifest["quantization"]["layers"].values())
        assert ("model.int8.onnx" in manifest["files"]) == int8
        assert manifest["deployable"] == ("model.int8.onnx" if int8 else "model.onnx")
        # size_bytes is what the deployable model stores: its initializers' bytes
        stored = sum(numpy_helper.to_array(i).nbytes for i in
                     onnx.load(str(directory / manifest["deployable"])).graph.initializer)
        assert manifest["deployable_weight_bytes"] == stored
        if p["origin"] != "refine":  # the refined record's size is a stand-in value
            assert manifest["metrics"]["size_bytes"]["value"] == stored
        assert manifest["file_bytes"] == {f: (directory / f).stat().st_size
                                          for f in manifest["files"]}
        assert isinstance(manifest["lineage"]["evaluation"], int)
        if p["origin"] == "refine":
            assert manifest["lineage"]["refinement"] == {"solver": "stand-in"}
            assert manifest["lineage"]["parents"] == p["parents"]


def test_only_supernet_runs_can_be_exported(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no supernet/ checkpoint: only supernet runs"):
        export_run(tmp_path)
    assert main(["export", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err


@pytest.mark.parametrize(("content", "message"), [
    ({"image_size": 32}, "needs a 'data' entry"),
    ({**PIPELINE, "bn_batches": 0}, "bn_batches must be an int >= 1"),
    ({**PIPELINE, "image_size": "32"}, "image_size must be an int"),
])
def test_a_bad_pipeline_file_is_a_config_error(tmp_path, content, message):
    (tmp_path / "pipeline.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        read_pipeline(tmp_path)
    (tmp_path / "pipeline.json").unlink()
    with pytest.raises(ConfigError, match=r"no pipeline\.json"):
        read_pipeline(tmp_path)
