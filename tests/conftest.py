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


TRAIN_STEPS = 40  # sandwich steps of the shared briefly trained supernet


@pytest.fixture(scope="session")
def data():
    from hybridmoo.data import digits

    return digits(32)


@pytest.fixture(scope="session")
def trained(data):
    """A test_resnet supernet after a few sandwich steps (largest ~99 %, smallest ~95 % on
    digits val), with calibrated activation ranges (imports here: the settings above come
    before torch and ray are imported)."""
    import torch

    from hybridmoo.data import epoch_batches
    from hybridmoo.supernet import make_supernet
    from hybridmoo.supernet.training import calibration_batches, fp32, sandwich_step

    torch.manual_seed(0)
    sn = make_supernet("test_resnet", num_classes=10, image_size=32)
    optimizer = torch.optim.Adam(sn.model.parameters(), lr=3e-3)
    batches = (b for epoch in range(100) for b in epoch_batches(data.train, 64, 0, epoch))
    for _, (x, y) in zip(range(TRAIN_STEPS), batches, strict=False):
        sandwich_step(sn, optimizer, x, y, [fp32(sn.smallest())], True)
    sn.calibrate(calibration_batches(data, 64, 0, 2))
    return sn
