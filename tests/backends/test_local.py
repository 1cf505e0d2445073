import threading

import pytest

from hybridmoo import ConfigError, LocalBackend
from hybridmoo.backends import make_backend
from hybridmoo.testing.backends import BackendConformance


class TestInline(BackendConformance):
    @pytest.fixture
    def backend(self):
        return LocalBackend(workers=1)


class TestThreads(BackendConformance):
    @pytest.fixture
    def backend(self):
        return LocalBackend(workers=3)


def test_threads_really_run_side_by_side():
    barrier = threading.Barrier(3, timeout=5)  # only passes if 3 calls are in flight at once

    def meet(x):
        barrier.wait()
        return x

    with LocalBackend(workers=3) as backend:
        assert sorted(backend.map(meet, range(3))) == [0, 1, 2]


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_worker_counts(workers):
    with pytest.raises(ConfigError, match="workers"):
        LocalBackend(workers)


def test_unknown_backend_name():
    with pytest.raises(ConfigError, match="unknown backend 'ray-cluster'"):
        make_backend("ray-cluster")
