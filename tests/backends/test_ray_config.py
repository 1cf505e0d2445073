"""The ``ray`` section of a run config and ``hybridmoo search --backend ray --ray-address``."""

import time

import pytest

from hybridmoo import ConfigError
from hybridmoo.backends import RayBackend
from hybridmoo.cli import main
from hybridmoo.config import RunConfig, load_run_config
from hybridmoo.journal import Journal

SPACE = {"width": [8, 16, 32], "depth": {"int_range": [1, 4]}}
EVALUATE = "hybridmoo.testing.proposers:toy_evaluate"


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text("space: digits-mlp\n" + text)
    return path


def test_ray_options_build_the_backend(tmp_path):
    path = write(tmp_path, "backend: ray\nworkers: 3\n"
                           "ray: {num_cpus: 0.5, num_gpus: 0.25, timeout_s: 30, max_retries: 1}\n")
    config = load_run_config(path)
    assert config.ray == {"num_cpus": 0.5, "num_gpus": 0.25, "timeout_s": 30, "max_retries": 1}
    backend = config.search_kwargs()["backend"]
    assert isinstance(backend, RayBackend) and backend.workers == 3
    assert (backend.num_gpus, backend.timeout_s, backend.max_retries) == (0.25, 30, 1)


def test_local_backend_stays_a_name(tmp_path):
    assert load_run_config(write(tmp_path, "workers: 2\n")).search_kwargs()["backend"] == "local"


def test_an_address_override_merges_into_the_file_options(tmp_path):
    path = write(tmp_path, "backend: ray\nray: {timeout_s: 30}\n")
    config = load_run_config(path, {"ray": {"address": "auto"}})
    assert config.ray == {"timeout_s": 30, "address": "auto"}


@pytest.mark.parametrize("text, message", [
    ("ray: {timeout: 3}\n", r"run.yaml: ray: unknown key 'timeout' \(did you mean 'timeout_s'\?\)"),
    ("ray: {num_gpus: 2.5}\n", "ray.num_gpus must be a fraction"),
    ("ray: {timeout_s: -1}\n", "ray.timeout_s must be a number > 0"),
    ("ray: auto\n", "ray must be a mapping"),
    ("backend: rey\n", "did you mean 'ray'"),
])
def test_bad_ray_sections(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(write(tmp_path, text))


def test_from_dict_takes_ray_options():
    config = RunConfig.from_dict({"space": SPACE, "evaluate": EVALUATE,
                                  "objectives": [{"name": "error"}], "backend": "ray",
                                  "ray": {"address": "127.0.0.1:6379"}})
    assert config.search_kwargs()["backend"].address == "127.0.0.1:6379"


def test_cli_ray_address_that_does_not_answer_fails_fast(tmp_path, capsys):
    path = write(tmp_path, "max_evals: 2\n")
    start = time.monotonic()
    assert main(["search", "--config", str(path), "--ray-address", "127.0.0.1:1", "-q"]) == 2
    assert time.monotonic() - start < 15
    assert "no Ray cluster answers at ray address '127.0.0.1:1'" in capsys.readouterr().err


def test_cli_ray_address_with_the_local_backend_is_an_error(tmp_path, capsys):
    path = write(tmp_path, "max_evals: 2\n")
    assert main(["search", "--config", str(path), "--backend", "local",
                 "--ray-address", "auto"]) == 2
    assert "--ray-address needs --backend ray" in capsys.readouterr().err


@pytest.mark.ray
def test_cli_search_on_ray(ray_cluster, tmp_path, capsys):
    run_dir = tmp_path / "run"
    path = write(tmp_path, f"algorithm: random\nmax_evals: 4\nrun_dir: {run_dir}\n")
    assert main(["search", "--config", str(path), "--backend", "ray", "--workers", "2",
                 "-q"]) == 0
    assert "4 evaluated, failed: 0" in capsys.readouterr().out
    assert len(Journal(run_dir).read()) == 4
