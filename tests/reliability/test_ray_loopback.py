"""A private Ray cluster never listens beyond loopback, whatever was imported first (issue 13).

Each case runs a fresh child process (this file, run as a script) inside its own network
namespace: loopback plus a veth pair with TEST_ADDRESS and a default route on it, so the
"outward address" Ray would pick is TEST_ADDRESS and a regression cannot reach the host's
interfaces. While Ray runs, the child samples the LISTEN sockets (psutil) of itself, of its
descendants and of every process whose command line names the run's private RAY_TMPDIR (and
their descendants), and prints them as JSON; the test asserts they are all on loopback.

    python tests/reliability/test_ray_loopback.py CASE WORK_DIR
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ray

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # as hybridmoo.backends.ray_cluster
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
TEST_ADDRESS = "10.200.0.1"
NAMESPACE_SETUP = (f"ip link set lo up && ip link add hm0 type veth peer name hm1 && "
                   f"ip addr add {TEST_ADDRESS}/24 dev hm0 && ip link set hm0 up && "
                   f"ip link set hm1 up && ip route add default dev hm0")
CHILD_TIMEOUT_S = 400


# -- the test side -----------------------------------------------------------------------------


def _unshare() -> list[str]:
    """The unshare command that gives a child its own network namespace, or skip."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a private network namespace")
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    probe = subprocess.run(["unshare", *flags, "sh", "-c", NAMESPACE_SETUP],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are not allowed here: unshare {' '.join(flags)}: "
                    f"{probe.stderr.strip() or probe.returncode}")
    return ["unshare", *flags]


def _run_child(case: str, *, exported: bool) -> dict[str, Any]:
    """Run CASE in a child inside a fresh namespace; ``exported``: LOOPBACK_ENV=0 from the
    start, else unset (as in a plain shell)."""
    unshare = _unshare()
    work = Path(tempfile.mkdtemp(prefix="hmlb-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k not in (LOOPBACK_ENV, "RAY_ADDRESS")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAY_TMPDIR=str(work / "ray"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                           env.get("PYTHONPATH", "")]))
    if exported:
        env[LOOPBACK_ENV] = "0"
    command = f'{NAMESPACE_SETUP} && exec "$0" "$@"'
    try:
        done = subprocess.run([*unshare, "sh", "-c", command, sys.executable, __file__, case,
                               str(work)], env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        assert done.returncode == 0 and lines, (done.returncode, done.stdout[-3000:],
                                                done.stderr[-3000:])
        return json.loads(lines[-1][len("RESULT "):])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _assert_loopback(sockets: list[list[Any]], where: str) -> None:
    outside = [s for s in sockets if s[1] not in LOOPBACK]
    assert not outside, f"{where}: listening beyond loopback: {outside}"


def test_ray_imported_first_is_refused_before_anything_listens():
    """``import ray`` first, LOOPBACK_ENV unset: connect, search(backend="ray"), the CLI, the
    pipeline's pre-flight check and Ray Train all refuse with one ConfigError; no socket."""
    out = _run_child("refused", exported=False)
    assert out["outward"] == TEST_ADDRESS  # what Ray would have used: the namespace's address
    for name in ("connect", "search", "check_address", "train"):
        message = out["errors"][name]
        assert message.startswith("ConfigError: cannot "), (name, message)
        assert LOOPBACK_ENV in message and "ray.address" in message, (name, message)
        assert TEST_ADDRESS in message, (name, message)
    assert out["cli"]["code"] == 2
    assert out["cli"]["stderr"].startswith("hybridmoo: error: cannot start a private Ray")
    assert len(out["cli"]["stderr"].strip().splitlines()) == 1
    assert out["sockets"] == []


@pytest.mark.slow  # Ray Train's workers start slowly: 2.5 min on a loaded 2-core machine
def test_ray_imported_first_with_the_variable_exported_stays_on_loopback():
    """``import ray`` first with LOOPBACK_ENV=0 exported: a search on a private cluster
    (RayBackend: driver, GCS, raylet, dashboard, agents, actors) and Ray Train (its controller,
    workers, rank 0's TCPStore and gloo) listen on loopback only."""
    out = _run_child("exported", exported=True)
    assert out["outward"] == TEST_ADDRESS
    assert out["search"] == {"evaluated": 4, "failed": 0}
    assert {"driver", "gcs_server", "raylet"} <= {s[0] for s in out["search_sockets"]}
    _assert_loopback(out["search_sockets"], "search")
    assert out["train_steps"] == 2
    assert "ray::RayTrainWorker" in {s[0] for s in out["train_sockets"]}
    _assert_loopback(out["train_sockets"], "Ray Train")


def test_the_cli_search_on_a_private_cluster_stays_on_loopback():
    """``hybridmoo search --backend ray --workers 2`` from a shell without LOOPBACK_ENV: the
    CLI imports hybridmoo (which sets it) before RayBackend imports ray."""
    out = _run_child("cli", exported=False)
    assert out["outward"] == TEST_ADDRESS
    assert out["cli"]["code"] == 0, out["cli"]["stderr"]
    names = {s[0] for s in out["sockets"]}  # the sampler saw the cluster and its workers
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names)
    _assert_loopback(out["sockets"], "CLI search")


@pytest.mark.slow
def test_the_cli_pipeline_on_a_private_cluster_stays_on_loopback():
    """The issue's command: ``hybridmoo search --config pipeline.yaml --backend ray
    --workers 2`` (local training, then the search on Ray) listens on loopback only."""
    out = _run_child("cli-pipeline", exported=False)
    assert out["cli"]["code"] == 0, out["cli"]["stderr"]
    names = {s[0] for s in out["sockets"]}  # the sampler saw the cluster and its workers
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names)
    _assert_loopback(out["sockets"], "CLI pipeline")


# -- the child side ----------------------------------------------------------------------------


class Sampler:
    """LISTEN sockets of this process, its descendants and the processes of the Ray session
    under ``marker`` (and their descendants), sampled in a thread: [name, ip, port] rows."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def rows(self) -> list[list[Any]]:
        return [list(row) for row in sorted(self.seen)]

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample(by_marker=tick % 2 == 0)  # the full process scan is the costly part
            tick += 1
            self._stop.wait(0.5)

    def sample(self, by_marker: bool = True) -> None:
        import psutil  # after `import ray`, which puts its bundled psutil on sys.path

        me = psutil.Process()
        roots = [me]
        if by_marker:
            for p in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    if any(self.marker in arg for arg in p.cmdline()):
                        roots.append(p)
        procs: dict[int, Any] = {}
        for root in roots:
            procs[root.pid] = root
            with contextlib.suppress(psutil.Error):
                procs.update((c.pid, c) for c in root.children(recursive=True))
        for p in procs.values():
            try:
                name = "driver" if p.pid == me.pid else _name(p)
                for c in p.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN:
                        self.seen.add((name, c.laddr.ip, c.laddr.port))
            except psutil.Error:
                pass


def _name(p: Any) -> str:
    """gcs_server, raylet, ray::IDLE, dashboard.py, ...: what the process is."""
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    scripts = [Path(a).name for a in cmd[1:] if a.endswith(".py")]
    return scripts[0] if "python" in p.name() and scripts else p.name()


def _outward() -> str:
    """The address a UDP socket towards the internet would use (no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("8.8.8.8", 53))
        return str(s.getsockname()[0])


def _toy() -> tuple[Any, Any, list[Any]]:
    from hybridmoo import Choice, IntRange, Objective, SearchSpace

    space = SearchSpace({"width": Choice([4, 8, 16]), "depth": IntRange(1, 4)})
    objectives = [Objective("error"), Objective("cost")]
    return space, _toy_evaluate, objectives


def _toy_evaluate(config: dict[str, Any]) -> dict[str, float]:
    return {"error": 1.0 / (config["width"] * config["depth"]),
            "cost": float(config["width"] * config["depth"])}


def _error(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _cli(argv: list[str], cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != LOOPBACK_ENV}  # as from a shell
    done = subprocess.run([sys.executable, "-m", "hybridmoo", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S - 60)
    return {"code": done.returncode, "stderr": done.stderr[-2000:]}


def _pipeline_yaml(work: Path) -> Path:
    path = work / "pipeline.yaml"
    path.write_text(textwrap.dedent("""\
        supernet: {model: test_resnet, image_size: 32, steps: 2, batch_size: 32, save_every: 0}
        evaluation: {repeats: 1, warmup: 0}
        max_evals: 2
        algorithm: random
        seed: 0
        refine: null
        export: false
        report: false
        run_dir: out
        """))
    return path


def _child_refused(work: Path) -> dict[str, Any]:
    import ray  # noqa: F401  (first: before hybridmoo could set LOOPBACK_ENV)

    from hybridmoo import search
    from hybridmoo.backends.ray_cluster import check_address, connect
    from hybridmoo.cli import main
    from hybridmoo.supernet.distributed import train_supernet_distributed

    space, evaluate, objectives = _toy()
    (work / "search.yaml").write_text(textwrap.dedent("""\
        space: {width: [4, 8, 16]}
        evaluate: builtins:len
        objectives: [{name: error}]
        max_evals: 2
        """))
    train = {"model": "test_resnet", "image_size": 32, "steps": 2, "batch_size": 8}
    with Sampler(str(work)) as sampler:
        errors = {
            "connect": _error(lambda: connect(None, 1.0)),
            "search": _error(lambda: search(space, evaluate, objectives, algorithm="random",
                                            max_evals=2, backend="ray", progress=False)),
            "check_address": _error(lambda: check_address(None)),
            "train": _error(lambda: train_supernet_distributed(train, workers=2,
                                                               progress=False)),
        }
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(["search", "--config", str(work / "search.yaml"), "--backend", "ray",
                         "--quiet"])
        time.sleep(1.0)  # anything Ray started would be up by now
    return {"outward": _outward(), "errors": errors, "sockets": sampler.rows(),
            "cli": {"code": code, "stderr": stderr.getvalue()}}


def _child_exported(work: Path) -> dict[str, Any]:
    import ray  # noqa: F401  (first, with LOOPBACK_ENV=0 exported)

    from hybridmoo import search
    from hybridmoo.supernet.distributed import train_supernet_distributed

    space, evaluate, objectives = _toy()
    with Sampler(str(work)) as search_sampler:
        result = search(space, evaluate, objectives, algorithm="random", max_evals=4,
                        backend="ray", workers=2, progress=False)
    train = {"model": "test_resnet", "image_size": 32, "steps": 2, "batch_size": 8,
             "save_every": 0}
    with Sampler(str(work)) as train_sampler:
        trained = train_supernet_distributed(train, workers=2, progress=False)
    return {"outward": _outward(), "search_sockets": search_sampler.rows(),
            "search": {"evaluated": len(result.history),
                       "failed": sum(not r.ok for r in result.history)},
            "train_steps": trained.step, "train_sockets": train_sampler.rows()}


def _child_cli(work: Path) -> dict[str, Any]:
    import ray  # noqa: F401  (only for its bundled psutil: the CLI is a process of its own)

    (work / "toy_problem.py").write_text(textwrap.dedent("""\
        def evaluate(config):
            return {"error": 1.0 / config["width"], "cost": float(config["width"])}
        """))
    (work / "search.yaml").write_text(textwrap.dedent("""\
        space: {width: [4, 8, 16, 32]}
        evaluate: toy_problem:evaluate
        objectives: [{name: error}, {name: cost}]
        algorithm: random
        max_evals: 4
        """))
    with Sampler(str(work)) as sampler:
        cli = _cli(["search", "--config", "search.yaml", "--backend", "ray", "--workers", "2",
                    "--quiet"], work)
    return {"outward": _outward(), "cli": cli, "sockets": sampler.rows()}


def _child_cli_pipeline(work: Path) -> dict[str, Any]:
    import ray  # noqa: F401  (only for its bundled psutil: the CLI is a process of its own)

    with Sampler(str(work)) as sampler:
        cli = _cli(["search", "--config", str(_pipeline_yaml(work)), "--backend", "ray",
                    "--workers", "2", "--quiet"], work)
    return {"outward": _outward(), "cli": cli, "sockets": sampler.rows()}


CASES = {"refused": _child_refused, "exported": _child_exported, "cli": _child_cli,
         "cli-pipeline": _child_cli_pipeline}

if __name__ == "__main__":
    print("RESULT " + json.dumps(CASES[sys.argv[1]](Path(sys.argv[2]))), flush=True)
