"""A search submitted as a Ray job to a real head node started with ``ray start --head``.

The head listens on 127.0.0.1 only, with its own temp dir and ports, and token authentication
on (the token is handed to ``ray start`` and ``ray job submit`` alike through RAY_AUTH_TOKEN).
It is stopped by signalling the process group of its ``ray start --block`` process.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hybridmoo.archive import ParetoArchive
from hybridmoo.backends.ray_cluster import LOOPBACK_ENV
from hybridmoo.journal import Journal
from hybridmoo.problems import make_problem

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_EVALS = 6
PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
              "ray-client-server-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the head node did not open port {port}: {log.read_text()[-3000:]}")


@pytest.fixture
def head_node():
    """``(env, dashboard port)`` of a fresh head node on 127.0.0.1, stopped afterwards."""
    # a short path: Ray's unix sockets live under it and must stay below 108 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="hm-ray-", dir="/tmp"))
    env = {**os.environ, LOOPBACK_ENV: "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
           f"--temp-dir={temp_dir}", "--disable-usage-stats",
           *(f"--{flag}={port}" for flag, port in ports.items())]
    log = temp_dir / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_port(ports["dashboard-port"], proc, log)
        yield env, ports["dashboard-port"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # ray start --block takes its node down with it
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_search_runs_as_a_ray_job(head_node, tmp_path):
    env, dashboard_port = head_node
    config = tmp_path / "run.yaml"
    run_dir = tmp_path / "run"
    config.write_text(f"space: digits-mlp\nalgorithm: random\nmax_evals: {MAX_EVALS}\n"
                      f"seed: 1\nworkers: 2\nrun_dir: {run_dir}\n")
    submit = ["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}", "--",
              sys.executable, "-m", "hybridmoo", "search", "--config", str(config),
              "--backend", "ray", "--ray-address", "auto", "--quiet"]
    job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    records = Journal(run_dir).read()
    assert len(records) == MAX_EVALS
    assert len({r.key for r in records}) == MAX_EVALS
    archive = ParetoArchive(make_problem("digits-mlp").objectives)
    for r in records:
        archive.add(r)
    assert archive.front
