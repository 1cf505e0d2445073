"""A Pareto set model on a real pipeline run: trained on its supernet, asked through
``hybridmoo pick --from-model`` (a network exported and reloaded, also between the front's
points), and used as the search engine 'paretoset'."""

import shutil

import numpy as np
import pytest
import torch

import hybridmoo
from hybridmoo.cli import main
from hybridmoo.errors import ConfigError
from hybridmoo.export import read_manifest
from hybridmoo.objectives import Objective
from hybridmoo.paretoset import ParetoSetSettings, load_paretoset
from hybridmoo.paretoset.run import train_for_run
from hybridmoo.proposers import make_proposer
from hybridmoo.supernet import load_supernet

SETTINGS = ParetoSetSettings(steps=6, preferences=4, task_samples=12, refresh_every=3,
                             hidden=16, checkpoint_every=3)


@pytest.fixture(scope="module")
def trained_run(finished_pipeline, tmp_path_factory):
    """A copy of the finished pipeline run with a Pareto set model in it."""
    run = tmp_path_factory.mktemp("paretoset") / "run"
    shutil.copytree(finished_pipeline.run_dir, run)
    train_for_run(run, SETTINGS, progress=False)
    return run


def test_training_twice_without_resume_is_refused(trained_run):
    with pytest.raises(ConfigError, match="resume it"):
        train_for_run(trained_run, SETTINGS, progress=False)
    assert main(["paretoset", str(trained_run.parent / "nowhere")]) == 2


def test_pick_from_model_exports_a_network_within_the_limit(trained_run, tmp_path, capsys):
    supernet = load_supernet(trained_run / "supernet")
    ps = load_paretoset(trained_run / "paretoset", supernet)
    fast = ps.predicted(ps.config_for([0, 1, 0]))["latency_ms"]
    slow = ps.predicted(ps.config_for([1, 0, 0]))["latency_ms"]
    limit = 0.5 * (fast + slow) if slow > fast else slow
    out = tmp_path / "picked"
    assert main(["pick", str(trained_run), "--from-model", "--max-latency-ms", str(limit),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "measured:" in printed and str(out) in printed
    manifest = read_manifest(out)
    assert manifest["config"] == ps.config_for(latency_ms=limit)
    assert manifest["extra"]["predicted"]["latency_ms"] <= limit
    assert {"accuracy", "latency_ms", "size_bytes"} <= set(manifest["metrics"])
    net = hybridmoo.load_subnet(out)
    with torch.no_grad():
        y = net(torch.zeros(2, 3, supernet.image_size, supernet.image_size))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_pick_from_model_by_preference_and_its_errors(trained_run, tmp_path):
    out = tmp_path / "by_preference"
    assert main(["pick", str(trained_run), "--from-model", "--preference", "1", "0", "0",
                 "--out", str(out)]) == 0
    ps = load_paretoset(trained_run / "paretoset")
    assert read_manifest(out)["config"] == ps.config_for([1, 0, 0])
    assert main(["pick", str(trained_run), "--from-model", "--max-latency-ms", "1e-9"]) == 1
    assert main(["pick", str(trained_run), "--from-model", "--max-latency-ms", "1",
                 "--max-size-mb", "1"]) == 2
    assert main(["pick", str(trained_run), "--preference", "1", "0", "0"]) == 2


def test_the_model_as_a_search_engine(trained_run):
    supernet = load_supernet(trained_run / "supernet")
    objectives = (Objective("accuracy", "max"), Objective("latency_ms", "min"),
                  Objective("size_bytes", "min"))
    engine = make_proposer("paretoset", supernet.space, objectives, seed=0,
                           model=str(trained_run / "paretoset"))
    ps = load_paretoset(trained_run / "paretoset")
    asked = engine.ask(6)
    assert len({c.key for c in asked}) == 6
    given = {str(sorted(c.items())) for c in ps.configs_for(
        np.random.default_rng(0).dirichlet(np.ones(3), 5000))}
    assert str(sorted(asked[0].config.items())) in given  # the first is the model's own
    with pytest.raises(ConfigError, match="needs algorithm_options"):
        make_proposer("paretoset", supernet.space, objectives)
