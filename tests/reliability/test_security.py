"""Security: no pickle (or other code-running loader) in what hybridmoo reads or writes, local
Ray clusters bound to 127.0.0.1, names from configs never turned into paths, checksums checked
on load.

``run_dir`` (and ``--out``, a training config's ``spec`` / ``checkpoint`` / ``data.root``) are
paths the user chose, resolved against the config file's directory, and may point anywhere the
user can write: that is the user's call, not an escape. What must never become part of a path is
a *name*: dimension and objective names, values, record keys, file names read from a manifest.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybridmoo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "hybridmoo"
LOOPBACK = "127.0.0.1"


def library_calls() -> list[tuple[str, ast.Call]]:
    """Every call in the library's source, with ``file:line``."""
    calls = []
    for path in sorted(LIBRARY.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, else ``""``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def constant(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


UNSAFE = {  # callee (last two parts of its dotted name) -> why
    "pickle.load": "pickle", "pickle.loads": "pickle", "pickle.Unpickler": "pickle",
    "pickle.dump": "pickle", "pickle.dumps": "pickle", "cloudpickle.loads": "pickle",
    "dill.load": "pickle", "dill.loads": "pickle", "joblib.load": "pickle",
    "marshal.loads": "marshal", "shelve.open": "pickle", "torch.save": "pickle (torch.save)",
    "yaml.unsafe_load": "YAML that runs code", "yaml.full_load": "YAML that builds objects",
}


def unsafe_reason(call: ast.Call) -> str | None:
    name = dotted(call.func)
    short = ".".join(name.split(".")[-2:])
    if short in UNSAFE:
        return UNSAFE[short]
    if name in ("eval", "exec"):
        return f"{name}()"
    if short == "torch.load" and constant(keyword(call, "weights_only")) is not True:
        return "torch.load without weights_only=True"
    allow_pickle = keyword(call, "allow_pickle")
    if short in ("np.load", "numpy.load") and allow_pickle is not None and \
            constant(allow_pickle) is not False:
        return "np.load with allow_pickle"
    if short == "yaml.load":
        loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        if loader is None or dotted(loader).split(".")[-1] in ("Loader", "UnsafeLoader",
                                                               "FullLoader"):
            return "yaml.load without a safe loader"
    return None


def test_the_library_never_unpickles_or_runs_loaded_code():
    found = [f"{where}: {reason}" for where, call in library_calls()
             if (reason := unsafe_reason(call))]
    assert found == []


def test_the_scan_itself_catches_each_unsafe_form():
    bad = ["pickle.load(f)", "pickle.loads(b)", "torch.load(p)",
           "torch.load(p, weights_only=False)", "np.load(p, allow_pickle=True)", "yaml.load(t)",
           "yaml.load(t, Loader=yaml.Loader)",
           "yaml.unsafe_load(t)", "torch.save(x, p)", "eval(s)"]
    good = ["torch.load(p, weights_only=True)", "np.load(p)", "yaml.load(t, Loader=Safe)",
            "net.eval()", "json.loads(s)"]
    assert all(unsafe_reason(ast.parse(code).body[0].value) for code in bad)
    assert not any(unsafe_reason(ast.parse(code).body[0].value) for code in good)


def test_local_ray_clusters_bind_to_loopback():
    """Every ``ray.init`` that starts a cluster (no address, or "local") binds the node and the
    dashboard / job server to 127.0.0.1; joining a cluster the user runs is the user's choice."""
    inits = [(where, call) for where, call in library_calls() if dotted(call.func) == "ray.init"]
    if not inits:
        pytest.skip("the library starts no Ray cluster (no ray.init call)")
    starts = [(where, call) for where, call in inits
              if keyword(call, "address") is None or constant(keyword(call, "address")) == "local"]
    assert starts, "no ray.init call starts a local cluster"
    for where, call in starts:
        assert constant(keyword(call, "_node_ip_address")) == LOOPBACK, where
        if constant(keyword(call, "include_dashboard")) is not False:
            assert constant(keyword(call, "dashboard_host")) == LOOPBACK, where


HOSTILE_EVAL = """\
def evaluate(c):
    return {"../../escaped": float(c["../dim"]), "/tmp/abs": 1.0, "a/b": float(len(c["x"]))}
"""
HOSTILE_RUN = """\
space: {"../dim": [1, 2, 3], x: ["../../v", "/etc/passwd", "~"]}
evaluate: hostile_eval:evaluate
objectives: [{name: ../../escaped}, {name: /tmp/abs}, {name: a/b, direction: max}]
algorithm: random
max_evals: 6
run_dir: sandbox/run
"""


def test_names_from_a_config_never_become_paths(tmp_path):
    """Dimension names, values and objective names full of ``..`` and ``/``: the run (and its
    report, when the report module is there) writes only its own fixed file names inside the
    run directory, and every file it writes is JSON, not pickle."""
    (tmp_path / "hostile_eval.py").write_text(HOSTILE_EVAL)
    (tmp_path / "run.yaml").write_text(HOSTILE_RUN)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    commands = [["search", "-c", "run.yaml", "-q"]]
    if (LIBRARY / "report.py").exists():
        commands.append(["report", "sandbox/run"])
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "hybridmoo", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    outside = written - {"hostile_eval.py", "run.yaml"}
    assert all(p.startswith("sandbox/run/") for p in outside), outside
    assert all(".." not in p and "escaped" not in p and "passwd" not in p for p in outside)
    run_dir = tmp_path / "sandbox" / "run"
    assert json.loads((run_dir / "run.json").read_text())["objectives"][0]["name"] == \
        "../../escaped"
    for line in (run_dir / "journal.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_supernet_checkpoint_is_json_and_safetensors_and_checked_on_load(tmp_path):
    from hybridmoo.supernet.checkpoint import META_FILE, WEIGHTS_FILE, load_supernet
    from hybridmoo.supernet.training import train_supernet

    train_supernet({"model": "test_resnet", "steps": 2, "batch_size": 8, "random_subnets": 0,
                    "run_dir": str(tmp_path)}, progress=False, stop_at=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, WEIGHTS_FILE]
    info = json.loads((tmp_path / META_FILE).read_text())
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    header = int.from_bytes(raw[:8], "little")  # safetensors: u64 length, then JSON
    assert json.loads(raw[8:8 + header]) and len(info["sha256"]) == 64
    load_supernet(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))  # one byte
    with pytest.raises(ConfigError, match="does not match"):
        load_supernet(tmp_path)


def test_an_exported_network_is_checked_and_its_manifest_names_stay_inside(tmp_path):
    export = pytest.importorskip("hybridmoo.export")
    import timm

    net = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    manifest_path = export.save_network(net, tmp_path / "net")
    export.load_subnet(tmp_path / "net")
    manifest = json.loads(manifest_path.read_text())
    for weights in ("../../outside.safetensors", "/etc/passwd", ".hidden"):
        manifest_path.write_text(json.dumps({**manifest, "weights": weights}))
        with pytest.raises(ConfigError):
            export.load_subnet(tmp_path / "net")
    manifest_path.write_text(json.dumps(manifest))
    weights = tmp_path / "net" / manifest["weights"]
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.raises(ConfigError):
        export.load_subnet(tmp_path / "net")


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path):
    from hybridmoo.config import load_run_config

    marker = tmp_path / "ran"
    for tag in ("!!python/object/apply:os.system", "!!python/name:os.system",
                "!!python/object/new:pathlib.Path"):
        path = tmp_path / "run.yaml"
        path.write_text(textwrap.dedent(f"""\
            space: {tag} ["touch {marker}"]
        """))
        with pytest.raises(ConfigError, match="invalid YAML"):
            load_run_config(path)
    assert not marker.exists()
