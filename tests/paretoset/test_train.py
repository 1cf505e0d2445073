"""Training a Pareto set model on the shared briefly trained supernet (digits)."""

import numpy as np
import pytest
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo import SOLVERS, gram
from hybridmoo.paretoset.directions import direction_weights, gumbel_sample, sample_preferences
from hybridmoo.paretoset.model import ParetoSet
from hybridmoo.paretoset.train import ParetoSetSettings, train_paretoset

QUICK = {"steps": 4, "batch_size": 32, "preferences": 2, "hidden": 16, "checkpoint_every": 2,
         "task_samples": 12, "refresh_every": 2}


def test_straight_through_sample_is_one_hot_with_soft_gradients():
    logits = torch.tensor([0.5, 2.0, -1.0], requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    picks = [int(gumbel_sample(logits, 1.0, gen).argmax()) for _ in range(2000)]
    share = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(share, torch.softmax(logits, 0).detach().numpy(), atol=0.03)
    w = gumbel_sample(logits, 1.0, gen)
    assert sorted(w.detach().tolist()) == [0.0, 0.0, 1.0]
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_preferences_are_uniform_on_the_simplex():
    p = sample_preferences(4000, 3, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(p.sum(dim=1).numpy(), 1.0, atol=1e-6)
    assert float(p.min()) >= 0
    np.testing.assert_allclose(p.mean(dim=0).numpy(), 1 / 3, atol=0.02)
    assert abs(float((p[:, 0] < 0.5).float().mean()) - 0.75) < 0.03  # Dirichlet(1): 1 - 0.5^2


@pytest.mark.parametrize("solver", ["mgda", "upgrad", "chebyshev", "epo"])
def test_the_direction_favours_what_the_preference_favours(solver):
    """Three orthogonal gradients of equal length: the objective with the larger preference
    falls faster along the combined direction, for preference-aware and -blind solvers."""
    J = np.eye(3)
    losses = np.array([0.5, 0.5, 0.5])
    options = {"smoothing": 0.1} if solver == "chebyshev" else {}
    for p in ([0.6, 0.3, 0.1], [0.1, 0.2, 0.7]):
        w = direction_weights(solver, gram(J), losses, np.array(p), np.random.default_rng(0),
                              options)
        rate = J @ (J.T @ w)  # decrease of each objective along -d
        assert np.argmax(rate) == int(np.argmax(p)), (solver, p, rate)
        assert rate[int(np.argmax(p))] > rate[int(np.argmin(p))] + 1e-6, (solver, p, rate)


def test_zero_gradients_get_no_weight():
    G = gram(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    for solver in ("mgda", "chebyshev"):
        w = direction_weights(solver, G, np.ones(3), np.full(3, 1 / 3),
                              np.random.default_rng(0), {})
        assert np.all(np.isfinite(w)) and w[1] == 0.0


def test_bad_settings_are_clear_errors():
    for bad in ({"steps": 0}, {"lr": -1.0}, {"temperature": 0}, {"solver": "nope"},
                {"solver": "pareto-mtl"}, {"solver": "mgda", "solver_options": {"x": 1}},
                {"batch_size": True}):
        with pytest.raises(ConfigError):
            ParetoSetSettings(**bad)
    with pytest.raises(ConfigError, match="unknown paretoset option"):
        ParetoSetSettings.from_dict({"step": 3})
    assert "upgrad" in SOLVERS


def test_training_writes_a_model_that_reloads_and_answers(trained, data, tmp_path):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    ps = train_paretoset(trained, data, run_dir=tmp_path, settings=ParetoSetSettings(**QUICK),
                         progress=False)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert ps.info["step"] == QUICK["steps"] and len(ps.info["history"]) == QUICK["steps"]
    assert np.all(np.isfinite(ps.info["history"]))
    span = ps.info["span"]
    assert all(lo < hi for lo, hi in zip(span["ideal"], span["nadir"], strict=True))
    loaded = ParetoSet.load(tmp_path, costs=ps.costs)
    for p in np.random.default_rng(0).dirichlet(np.ones(3), 10):
        config = loaded.config_for(p)
        assert trained.space.contains(config) and config == ps.config_for(p)
    limit = 0.5 * (ps.predicted(trained.largest())["latency_ms"]
                   + ps.predicted(trained.smallest())["latency_ms"])
    assert loaded.predicted(loaded.config_for(latency_ms=limit))["latency_ms"] <= limit


def test_resuming_continues_where_the_interruption_left(trained, data, tmp_path):
    straight = train_paretoset(trained, data, run_dir=tmp_path / "a",
                               settings=ParetoSetSettings(**QUICK), progress=False)
    train_paretoset(trained, data, run_dir=tmp_path / "b",
                    settings=ParetoSetSettings(**{**QUICK, "steps": 2}), progress=False)
    resumed = train_paretoset(trained, data, run_dir=tmp_path / "b",
                              settings=ParetoSetSettings(**QUICK), resume=True, progress=False)
    assert resumed.info["history"] == straight.info["history"]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="other settings"):
        train_paretoset(trained, data, run_dir=tmp_path / "b", resume=True, progress=False,
                        settings=ParetoSetSettings(**{**QUICK, "lr": 0.01}))
