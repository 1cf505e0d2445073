"""Test-session settings: no network, one BLAS thread per process (2-core machines), and one
local Ray cluster on 127.0.0.1 for the whole session (starting one costs 5-7 s)."""

import os

import pytest

from hybridmoo.backends.ray_cluster import LOOPBACK_ENV

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault(LOOPBACK_ENV, "0")  # before ray is imported: listen on 127.0.0.1 only


@pytest.fixture(scope="session")
def finished_pipeline(tmp_path_factory):
    """One finished tiny pipeline run (:mod:`hybridmoo.testing.runs`: trained, searched with
    refinement, exported, reported), shared by the tests that only read a run directory."""
    from hybridmoo.pipeline import run_pipeline
    from hybridmoo.testing.runs import tiny_pipeline

    return run_pipeline(tiny_pipeline(tmp_path_factory.mktemp("pipeline") / "run"),
                        progress=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """A running local cluster; backends built in the tests reuse it and leave it running."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=4, include_dashboard=False,
             _node_ip_address="127.0.0.1", object_store_memory=100 * 2**20,
             logging_level="WARNING")
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    yield ray
    ray.shutdown()
