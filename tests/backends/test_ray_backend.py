"""RayBackend on a real local Ray cluster (127.0.0.1): the conformance suite, then faults."""

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hybridmoo import ConfigError, search
from hybridmoo.backends import RayBackend, make_backend
from hybridmoo.backends.ray_backend import check_options
from hybridmoo.journal import JOURNAL_FILE
from hybridmoo.objectives import EvaluationTask
from hybridmoo.space import Candidate
from hybridmoo.testing.backends import BackendConformance
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate

pytestmark = pytest.mark.ray


def candidates(n):
    return [Candidate(c) for c in ({"op": op, "width": w, "depth": d, "ratio": 0.5}
                                   for op in ("conv3", "conv1") for w in (8, 16)
                                   for d in range(1, 6))][:n]


@dataclass(frozen=True)
class CrashOnce:
    """Kills its own worker process the first time it sees a config (a marker file remembers)."""

    marker_dir: str

    def __call__(self, config):
        marker = Path(self.marker_dir) / "-".join(str(v) for v in config.values())
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return toy_evaluate(config)


@dataclass(frozen=True)
class HangOnDepth:
    """Hangs (far past any test timeout) for one depth; evaluates the rest normally."""

    depth: int
    pid_file: str = ""

    def __call__(self, config):
        if config["depth"] == self.depth:
            if self.pid_file:
                Path(self.pid_file).write_text(str(os.getpid()))
            time.sleep(300)
        return toy_evaluate(config)


def reject_wide(config):
    if config["width"] > 8:
        raise ValueError(f"width {config['width']} is too wide")
    return toy_evaluate(config)


class TestRayConformance(BackendConformance):
    @pytest.fixture
    def backend(self, ray_cluster):
        return RayBackend(workers=2)


def test_search_end_to_end_with_journal(ray_cluster, tmp_path):
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=12,
                    backend="ray", workers=2, run_dir=tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()
    assert len(lines) == len(result.history) == 12
    assert len({json.dumps(json.loads(line)["candidate"]["config"], sort_keys=True)
                for line in lines}) == 12
    assert result.front
    for r in result.history:
        if r.ok:
            assert r.values == {k: toy_evaluate(r.config)[k] for k in ("error", "cost")}


def test_a_killed_actor_is_replaced_and_its_candidate_recorded_once(ray_cluster, tmp_path):
    backend = RayBackend(workers=2)
    result = search(SPACE, CrashOnce(str(tmp_path)), OBJECTIVES, algorithm="random",
                    max_evals=4, backend=backend, run_dir=tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()
    keys = [json.dumps(json.loads(line)["candidate"]["config"], sort_keys=True)
            for line in lines]
    assert len(keys) == len(set(keys)) == 4
    assert backend.replaced == 4  # every candidate crashed its actor once, then succeeded
    assert all(r.ok or "skip x 6" in r.reason for r in result.history)


def test_an_actor_killed_from_outside_is_replaced(ray_cluster, tmp_path):
    pid_file = tmp_path / "pid"
    items = candidates(3)
    hang = HangOnDepth(items[0].config["depth"], str(pid_file))

    def kill_when_started():
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)  # the pid is written before the sleep starts
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    with RayBackend(workers=1, max_retries=0) as backend:
        results = dict(_pairs(backend, hang, items))
    killer.join()
    assert not results[items[0]].ok
    assert results[items[0]].reason.startswith("evaluator process died 1 times")
    assert all(results[c].ok for c in items[1:])


def test_a_raising_evaluate_is_a_failed_record_with_its_reason(ray_cluster):
    with RayBackend(workers=2) as backend:
        results = list(backend.map(EvaluationTask(reject_wide, OBJECTIVES), candidates(8)))
    failed = sorted(r.reason for r in results if not r.ok)
    assert len(results) == 8
    assert failed == ["ValueError: width 16 is too wide"] * 3  # 5 of width 8, 3 of width 16


def test_a_hanging_evaluate_times_out_and_its_actor_is_replaced(ray_cluster):
    items = candidates(4)
    hang = HangOnDepth(items[1].config["depth"])
    start = time.monotonic()
    with RayBackend(workers=1, timeout_s=2.0) as backend:
        results = dict(_pairs(backend, hang, items))
        assert backend.replaced == 1
    assert time.monotonic() - start < 60
    assert results[items[1]].reason == "timed out after 2s" and not results[items[1]].ok
    assert all(results[c].ok for c in items if c is not items[1])


def _pairs(backend, evaluate, items):
    backend.start(EvaluationTask(evaluate, OBJECTIVES))
    for c in items:
        backend.submit(c)
    return [backend.next_done() for _ in items]



def started_at(seconds):
    """When this call started (wall-clock), after sleeping ``seconds``."""
    start = time.time()
    time.sleep(seconds)
    return start


def test_an_actor_starts_its_next_item_while_the_driver_is_busy(ray_cluster):
    # 2 actors take 4 items of 0.5 s at once; the driver then looks away for 1.5 s (as while
    # it fits a surrogate): the second item on each actor starts when the first ends
    with RayBackend(workers=2) as backend:
        assert backend.capacity == 4
        backend.start(started_at)
        deadline = time.monotonic() + 60
        while len(backend._on) < 2 and time.monotonic() < deadline:  # until both actors are up
            backend.submit(0.0)
            backend.next_done()
        submitted = time.time()
        for _ in range(4):
            backend.submit(0.5)
        time.sleep(1.5)
        starts = sorted(backend.next_done()[1] for _ in range(4))
    assert starts[3] - submitted < 1.2  # with one item per actor: after 1.5 s


def test_plain_functions_raise_like_the_local_backend(ray_cluster):
    with RayBackend(workers=1) as backend, pytest.raises(ZeroDivisionError):
        list(backend.map(lambda x: 1 / x, [1, 0]))


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "no Ray cluster answers at ray address '127.0.0.1:1'"),
    ("http://127.0.0.1:8265", "is a dashboard"),
    ("nonsense", "must look like host:port"),
])
def test_a_bad_address_is_a_config_error_within_seconds(address, message):
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message), RayBackend(address=address) as backend:
        backend.start(toy_evaluate)
    assert time.monotonic() - start < 10


def test_a_gpu_per_actor_without_gpus_is_a_config_error(ray_cluster):
    with pytest.raises(ConfigError, match=r"ray.num_gpus=0.5 .* has 0 GPU"), \
            RayBackend(num_gpus=0.5) as backend:
        backend.start(toy_evaluate)


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers"), ({"num_cpus": -1}, "num_cpus"), ({"num_gpus": 1.5}, "num_gpus"),
    ({"num_gpus": "1"}, "num_gpus"), ({"timeout_s": 0}, "timeout_s"),
    ({"max_retries": -1}, "max_retries"), ({"address": ""}, "address"),
])
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        check_options(**options)


def test_make_backend_passes_ray_options_and_rejects_unknown_ones():
    backend = make_backend("ray", 3, num_cpus=0.5, timeout_s=9)
    assert isinstance(backend, RayBackend) and backend.workers == 3
    assert (backend.num_cpus, backend.timeout_s) == (0.5, 9)
    with pytest.raises(ConfigError, match="has no option 'timeout'"):
        make_backend("ray", 1, timeout=3)
    with pytest.raises(ConfigError, match="local backend has no option"):
        make_backend("local", 1, address="auto")
