"""Bad input through the real command line: each case runs ``python -m hybridmoo ...`` in a
subprocess and must end with exit code 2, exactly one stderr line ``...: error: ...`` naming the
problem, no traceback, and nothing written: the case's directory (config files, an existing run)
is byte for byte what it was before.

Each case is (id, files, argv, keyword): ``files`` are written into a fresh directory (the
working directory of the run); ``{base}`` in a file is replaced by the valid run config below;
a ``SETUP`` entry in ``argv`` splits it into a first command that must succeed (it makes a run to
misuse) and the bad command.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EV = """\
VALUE = 3

def evaluate(c):
    return {"e": float(c["a"]), "s": float(c["b"])}

def wrong_key(c):
    return {"err": float(c["a"]), "s": 1.0}

def nan(c):
    return {"e": float("nan"), "s": 1.0}
"""
BASE = """\
space: {a: [1, 2, 3], b: {int_range: [0, 5]}}
evaluate: ev:evaluate
objectives: [{name: e}, {name: s}]
algorithm: random
max_evals: 5
run_dir: run
"""
SETUP = "--then--"
SEARCH = ["search", "-c", "run.yaml"]
TRAIN = ["train-supernet", "-c", "train.yaml"]
TINY_TRAIN = "model: test_resnet\nsteps: 2\nbatch_size: 8\ncalib_batches: 1\nsave_every: 0\n"


def png(cut: bool = False) -> bytes:
    """A real 32x32 PNG; with ``cut`` its first half only (the header reads, decoding
    fails)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("L", (32, 32), bytes(range(256)) * 4).convert("RGB").save(buffer, "PNG")
    data = buffer.getvalue()
    return data[:len(data) // 2] if cut else data


def image_folder(**bad: bytes) -> dict[str, str | bytes]:
    """``imgs/``: train/ and val/ with two classes of real PNGs, the files in ``bad`` (path
    relative to imgs/) added or replaced, and ``train.yaml`` training on it."""
    files: dict[str, str | bytes] = {
        f"imgs/{split}/{label}/{i}.png": png() for split in ("train", "val")
        for label in ("a", "b") for i in range(2)}
    files.update({f"imgs/{name}": data for name, data in bad.items()})
    files["train.yaml"] = TINY_TRAIN + "data: {root: imgs}\n"
    return files


PIPE = ["search", "-c", "pipe.yaml"]
TINY_PIPE = ("supernet: {model: test_resnet, steps: 2, batch_size: 8, calib_batches: 1, "
             "save_every: 0%s}\nmax_evals: 2\nalgorithm: random\nexport: false\n"
             "report: false\nrun_dir: run\n")


def pipeline(supernet: str = "", **changes: str) -> dict[str, str]:
    """``pipe.yaml``: a tiny supernet pipeline, ``supernet`` added to its supernet block
    (``", key: value"``), ``changes`` (YAML text per key) added at the top level."""
    return {"pipe.yaml": TINY_PIPE % supernet + "".join(f"{k}: {v}\n" for k, v in
                                                        changes.items())}


def wrong_checkpoint() -> bytes:
    """A real safetensors file whose tensors do not fit test_resnet."""
    import torch
    from safetensors.torch import save

    return save({"conv1.weight": torch.zeros(3, 3)})


def base(*drop: str, **changes: str) -> dict[str, str]:
    """``run.yaml`` = the valid config without the keys in ``drop``, plus ``changes`` (YAML
    text per key), and ``ev.py``."""
    lines = [line for line in BASE.splitlines() if line.split(":")[0] not in drop + tuple(changes)]
    lines += [f"{key}: {value}" for key, value in changes.items()]
    return {"run.yaml": "\n".join(lines) + "\n", "ev.py": EV}


CASES = [
    # -- unknown keys at each level of the run config
    ("unknown-key", base(max_eval="3"), SEARCH, "unknown key 'max_eval' (did you mean"),
    ("unknown-objective-key", base(objectives="[{name: e, dir: min}, {name: s}]"), SEARCH,
     "objectives[0]: unknown key 'dir'"),
    ("unknown-constraint-key", base(constraints="[{name: s, maxi: 1}]"), SEARCH,
     "constraints[0]: unknown key 'maxi'"),
    ("unknown-dimension-kind", base(space="{a: {choices: [1, 2]}}"), SEARCH,
     "unknown kind 'choices'"),
    ("unknown-algorithm-option", base(algorithm="nsga2", algorithm_options="{popsize: 4}"),
     SEARCH, "has no option 'popsize'"),
    ("unknown-problem-option", base("evaluate", "objectives", space="digits-mlp",
                                    problem_options="{layers: 3}"), SEARCH, "layers"),
    # -- wrong types
    ("max-evals-text", base(max_evals="ten"), SEARCH, "max_evals must be an int"),
    ("seed-float", base(seed="1.5"), SEARCH, "seed must be an int"),
    ("objectives-not-a-list", base(objectives="e"), SEARCH, "objectives must be a non-empty list"),
    ("direction", base(objectives="[{name: e, direction: up}, {name: s}]"), SEARCH,
     "direction must be 'min' or 'max'"),
    ("number-as-text", base(reference="{e: [0, 1e-3], s: [0, 1]}"), SEARCH,
     "YAML reads numbers like 1e-3 as text"),
    ("choice-of-lists", base(space="{a: [[1, 2]], b: [1]}"), SEARCH,
     "Choice values must be str, int, float or bool"),
    ("space-is-a-number", base(space="3"), SEARCH, "space must be a problem name"),
    ("space-attribute-not-a-space", base(space="ev:VALUE"), SEARCH, "expected a SearchSpace"),
    # -- empty / inverted / duplicate space entries
    ("empty-choice", base(space="{a: [], b: [1]}"), SEARCH, "at least one value"),
    ("empty-space", base(space="{}"), SEARCH, "the search space is empty"),
    ("int-range-lo-above-hi", base(space="{a: {int_range: [5, 1]}}"), SEARCH, "lo <= hi"),
    ("duplicate-choice", base(space="{a: [1, 1]}"), SEARCH, "must be unique"),
    ("duplicate-objective", base(objectives="[{name: e}, {name: e}]"), SEARCH, "unique"),
    # -- budgets, seeds, workers
    ("negative-max-evals", base(max_evals="-5"), SEARCH, "max_evals must be a positive int"),
    ("zero-max-evals", base(max_evals="0"), SEARCH, "max_evals must be a positive int"),
    ("negative-seed", base(seed="-1"), SEARCH, "seed must be an int >= 0"),
    ("zero-workers", base(workers="0"), SEARCH, "workers must be a positive int"),
    ("equal-reference", base(reference="{e: [1, 1], s: [0, 1]}"), SEARCH,
     "best and worst must differ"),
    # -- unknown names
    ("unknown-algorithm", base(algorithm="nsga9"), SEARCH, "unknown algorithm 'nsga9'"),
    ("unknown-problem", base("evaluate", "objectives", space="nas-bench-graf"), SEARCH,
     "unknown problem 'nas-bench-graf'"),
    ("unknown-backend", base(backend="slurm"), SEARCH, "unknown backend 'slurm'"),
    ("unknown-module", base(evaluate="no_such_module:f"), SEARCH, "cannot import module"),
    ("unknown-function", base(evaluate="ev:evaluat"), SEARCH, "has no attribute 'evaluat'"),
    ("not-a-function", base(evaluate="ev:VALUE"), SEARCH, "not a function"),
    ("module-raises", {**base(), "ev.py": "raise ValueError('broken module')\n"}, SEARCH,
     "importing module 'ev' failed: ValueError: broken module"),
    # -- what evaluate returns
    ("objective-not-returned", base(evaluate="ev:wrong_key"), SEARCH,
     "evaluate did not return objective 'e'"),
    ("nan-every-time", base(evaluate="ev:nan"), SEARCH, "objective 'e' is not a finite number"),
    # -- the YAML file itself
    ("duplicate-yaml-key", {**base(), "run.yaml": BASE + "max_evals: 6\n"}, SEARCH,
     "key 'max_evals' is given twice"),
    ("yaml-syntax", {"run.yaml": "space: [1\n"}, SEARCH, "invalid YAML"),
    ("yaml-list", {"run.yaml": "- space\n"}, SEARCH, "expected a mapping"),
    ("yaml-empty", {"run.yaml": ""}, SEARCH, "the file is empty"),
    ("yaml-python-tag", {"run.yaml": "space: !!python/object/apply:os.getcwd []\n"}, SEARCH,
     "invalid YAML"),
    ("no-config-file", {}, SEARCH, "run.yaml: no such config file"),
    ("config-is-a-directory", {"run.yaml/x": ""}, SEARCH, "cannot read the config file"),
    ("config-not-utf8", {"run.yaml": b"space: \xff\xfe\n"}, SEARCH, "cannot read the config file"),
    # -- command-line flags
    ("flag-max-evals", base(), [*SEARCH, "--max-evals", "-3"], "argument --max-evals"),
    ("flag-workers", base(), [*SEARCH, "--workers", "0"], "argument --workers"),
    ("flag-seed", base(), [*SEARCH, "--seed", "x"], "argument --seed: must be an int"),
    ("flag-unknown", base(), [*SEARCH, "--maxevals", "3"], "unrecognized arguments"),
    ("flag-backend", base(), [*SEARCH, "--backend", "mars"], "argument --backend"),
    ("flag-algorithm", base(), [*SEARCH, "--algorithm", "nsga9"], "unknown algorithm 'nsga9'"),
    ("unknown-command", {}, ["serch"], "invalid choice: 'serch'"),
    ("no-command", {}, [], "required: COMMAND"),
    ("missing-config-flag", {}, ["search"], "required: --config"),
    # -- run directories
    ("resume-changed-settings", base(), [*SEARCH, SETUP, *SEARCH, "--resume", "--seed", "4"],
     "the run was started with different ['seed']"),
    ("rerun-without-resume", base(), [*SEARCH, SETUP, *SEARCH], "already holds a run"),
    ("resume-missing-run", base(), [*SEARCH, "--resume"], "holds no run"),
    ("resume-without-run-dir", base("run_dir"), [*SEARCH, "--resume"],
     "--resume needs a run directory"),
    ("run-dir-is-a-file", {**base(), "run": "not a directory\n"}, SEARCH, "not a directory"),
    ("run-dir-below-a-file", {**base(run_dir="notes.txt/run"), "notes.txt": "x\n"}, SEARCH,
     "cannot create run directory"),
    # -- supernet training configs
    ("train-unknown-key", {"train.yaml": TINY_TRAIN + "batch_sise: 4\n"}, TRAIN,
     "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
    ("train-negative-lr", {"train.yaml": TINY_TRAIN + "lr: -1\n"}, TRAIN,
     "lr must be a positive number"),
    ("train-unknown-model", {"train.yaml": TINY_TRAIN.replace("test_resnet", "resnet9000")},
     TRAIN, "no supernet spec serves model 'resnet9000'"),
    ("train-missing-data", {"train.yaml": TINY_TRAIN + "data: {root: no/such/folder}\n"}, TRAIN,
     "no/such/folder"),
    ("train-corrupt-image", image_folder(**{"val/b/1.png": png(cut=True)}), TRAIN,
     "1 corrupt or unreadable image: val/b/1.png (image file is truncated)"),
    ("train-fashion-mnist-missing",
     {"train.yaml": TINY_TRAIN + "data: {name: fashion-mnist, root: nofiles}\n",
      "nofiles/notes.txt": "not the IDX files\n"}, TRAIN, "apt-get install dataset-fashion-mnist"),
    ("train-image-too-small", {"train.yaml": TINY_TRAIN + "image_size: 4\n"}, TRAIN,
     "below the model's total stride"),
    # -- supernet pipelines: every check happens before the run directory is made
    ("pipe-unknown-model", {"pipe.yaml": (TINY_PIPE % "").replace("test_resnet", "resnet9000")},
     PIPE, "no supernet spec serves model 'resnet9000'"),
    ("pipe-missing-data", pipeline(", data: {root: no/such/folder}"), PIPE, "no/such/folder"),
    ("pipe-corrupt-image", {**image_folder(**{"val/b/1.png": png(cut=True)}),
                            **pipeline(", data: {root: imgs}")}, PIPE,
     "1 corrupt or unreadable image: val/b/1.png"),
    ("pipe-wrong-checkpoint", {**pipeline(", checkpoint: mine.safetensors"),
                               "mine.safetensors": wrong_checkpoint()}, PIPE,
     "does not fit test_resnet"),
    ("pipe-missing-checkpoint", pipeline(", checkpoint: nope.safetensors"), PIPE,
     "nope.safetensors"),
    ("pipe-device-not-here", pipeline(device="'cuda:99'"), PIPE,
     "is not available"),
    ("pipe-missing-latency-model", pipeline(evaluation="{latency_model: nope.json}"), PIPE,
     "nope.json does not exist"),
    ("pipe-ray-address-silent", pipeline(backend="ray", ray="{address: '127.0.0.1:9'}"), PIPE,
     "no Ray cluster answers"),
    ("pipe-other-config-in-run-dir", {**pipeline(), "run/pipeline.json": '{"seed": 5}\n'},
     PIPE, "started with different"),
    ("pipe-resume-other-config", {**pipeline(), "run/pipeline.json": '{"seed": 5}\n'},
     [*PIPE, "--resume"], "--overwrite"),
    ("pipe-rerun-without-resume", pipeline(), [*PIPE, SETUP, *PIPE],
     "already holds a run of this config (finished); continue it with --resume"),
    ("pipe-resume-nothing", pipeline(), [*PIPE, "--resume"], "holds no pipeline run"),
    ("pipe-overwrite-other-files", {**pipeline(), "run/notes.txt": "mine\n"},
     [*PIPE, "--overwrite"], "refusing to delete them"),
    ("pipe-resume-and-overwrite", pipeline(), [*PIPE, "--resume", "--overwrite"], "give one"),
    ("train-resume-nothing", {"train.yaml": TINY_TRAIN + "run_dir: out\n"}, [*TRAIN, "--resume"],
     "no supernet checkpoint"),
]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (``None`` for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "hybridmoo", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("files", "argv", "keyword"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, files, argv, keyword):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if SETUP in argv:
        first, argv = argv[:argv.index(SETUP)], argv[argv.index(SETUP) + 1:]
        done = run([*first, "-q"], tmp_path)
        assert done.returncode == 0, done.stderr
    before = snapshot(tmp_path)
    out = run(argv, tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), out.stderr
    assert lines[0].startswith("hybridmoo") and ": error: " in lines[0], lines[0]
    assert keyword in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing half-written, nothing at all
