"""The ``hybridmoo`` command line (also ``python -m hybridmoo``).

Commands: ``search`` (a run described by a YAML config, see :mod:`hybridmoo.config`),
``algorithms`` and ``problems`` (what is registered), ``demo`` (the whole supernet pipeline),
``train-supernet`` (an elastic supernet, see :mod:`hybridmoo.supernet.train_config`),
``profile`` (a latency model of a supernet on a device, see :mod:`hybridmoo.evaluate`),
``export`` (a supernet run's front as checkpoints + ONNX, see :mod:`hybridmoo.export`),
``report`` (a run's HTML report, see :mod:`hybridmoo.report`), ``pick`` (the exported point
to deploy under latency / size / accuracy limits, see :mod:`hybridmoo.pick`; ``--from-model``:
the network a Pareto set model gives) and ``paretoset`` (train that model on a run's
supernet, see :mod:`hybridmoo.paretoset`).

Exit codes: 0 done; 1 ``pick`` found no point within the limits; 2 bad input (a usage
error, or any :class:`~hybridmoo.errors.HybridMooError`, printed as one line ``hybridmoo:
error: ...`` without a traceback); 130 interrupted (a run with a run directory can be continued
with ``--resume``).

This module imports only the standard library at import time, so ``--help`` answers at once;
the search, YAML and rich are imported by the commands that need them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

from hybridmoo.cli_output import PROG, make_console, print_front, set_resume_hint
from hybridmoo.cli_pick import cmd_paretoset, cmd_pick
from hybridmoo.cli_supernet import (
    DEMO_OUT,
    cmd_demo,
    cmd_export,
    cmd_profile,
    cmd_report,
    cmd_train_supernet,
    run_pipeline_config,
)
from hybridmoo.errors import ConfigError, HybridMooError, one_line

EPILOG = """examples:
  hybridmoo search --config examples/nas_bench_graph.yaml
  hybridmoo search --config run.yaml --resume --max-evals 200
  hybridmoo algorithms
  hybridmoo demo --max-evals 30
  hybridmoo train-supernet --config examples/train_supernet.yaml
  hybridmoo profile --config examples/train_supernet.yaml --samples 60
  hybridmoo export runs/pipeline
  hybridmoo report runs/demo
  hybridmoo pick runs/demo --max-latency-ms 1 --out deploy/
  hybridmoo paretoset runs/demo
  hybridmoo pick runs/demo --from-model --max-latency-ms 0.5 --out deploy/"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse prints them)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.command(args)
    except KeyboardInterrupt:
        hint, marker = getattr(args, "resume_hint", None), getattr(args, "resume_marker", None)
        resumable = hint is not None and marker is not None and marker.is_file()
        message = f"resume it with: {hint}" if resumable else "nothing was written to resume"
        print(f"\n{PROG}: interrupted; {message}", file=sys.stderr)
        return 130
    except HybridMooError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from hybridmoo import __version__

    parser = _Parser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Multi-objective neural architecture search: find the Pareto front.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "search", help="run a search described by a YAML config",
        description="Run a search described by a YAML config. Flags override the config's keys.")
    p.add_argument("--config", "-c", required=True, metavar="FILE",
                   help="the run config (YAML); see examples/*.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue the run recorded in run_dir (replays its journal)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run recorded in run_dir (finished or not) and start over")
    p.add_argument("--algorithm", metavar="NAME",
                   help="search engine (see 'hybridmoo algorithms'); another engine than the "
                        "config's also drops the config's algorithm_options")
    p.add_argument("--max-evals", type=_positive_int, metavar="N",
                   help="number of unique configs to evaluate")
    p.add_argument("--seed", type=_non_negative_int, metavar="N", help="random seed")
    p.add_argument("--run-dir", metavar="DIR",
                   help="where the journal goes (relative to the current directory)")
    p.add_argument("--backend", choices=_backends(), help="where evaluations run")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster: 'auto' (the one on this machine, or the one "
                        "running a 'ray job submit' job), host:port or ray://host:port; "
                        "implies --backend ray")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="evaluations at the same time")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no front table: only the summary lines")
    p.set_defaults(command=_cmd_search)

    p = commands.add_parser("algorithms", help="list the registered search engines",
                            description="List the registered search engines.")
    p.set_defaults(command=_cmd_algorithms)

    p = commands.add_parser("problems", help="list the registered problems",
                            description="List the registered problems and their options.")
    p.set_defaults(command=_cmd_problems)

    p = commands.add_parser(
        "demo", help="the whole pipeline on the built-in digits data (a few CPU minutes)",
        description="Train a supernet of timm's test_resnet on the built-in digits data, search "
                    "it on measured accuracy, latency and size with gradient refinement rounds, "
                    "export the front (safetensors, manifest, ONNX, INT8) and write the report.")
    p.add_argument("--out", default=DEMO_OUT, metavar="DIR",
                   help=f"run directory (default {DEMO_OUT}; when it already exists, a new "
                        "timestamped directory inside it)")
    p.add_argument("--max-evals", type=_positive_int, metavar="N",
                   help="sub-networks to evaluate (default 40)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="supernet training steps (default 300)")
    p.add_argument("--algorithm", metavar="NAME", help="search engine (default: the library's)")
    p.add_argument("--seed", type=_non_negative_int, metavar="N",
                   help="random seed (default 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no front table: only the summary lines")
    p.set_defaults(command=cmd_demo)

    p = commands.add_parser(
        "train-supernet", help="train an elastic supernet described by a YAML config",
        description="Train an elastic supernet (sandwich rule, in-place distillation) from a "
                    "timm model; flags override the config's keys.")
    p.add_argument("--config", "-c", required=True, metavar="FILE",
                   help="the training config (YAML); see examples/train_supernet.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in run_dir")
    p.add_argument("--steps", type=_positive_int, metavar="N", help="total optimizer steps")
    p.add_argument("--run-dir", metavar="DIR",
                   help="where checkpoints go (relative to the current directory)")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="data-parallel training workers under Ray Train (each takes a share "
                        "of every batch); more than 1 implies --backend ray")
    p.add_argument("--backend", choices=_backends(),
                   help="local: one process (default); ray: Ray Train workers (DDP-style)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster ('auto', host:port or ray://host:port); "
                        "implies --backend ray")
    p.add_argument("--gpu", action="store_true",
                   help="one GPU per worker (NCCL); implies --backend ray")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(command=cmd_train_supernet)

    p = commands.add_parser(
        "profile", help="measure a device and fit a latency model of a supernet",
        description="Measure random sub-networks of a supernet on a device, fit a latency "
                    "model (a per-layer-kind table) and check it on 50 held-out sub-networks; "
                    "prints the measurement noise (CV) and Kendall tau, writes the model JSON "
                    "that a search reuses.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", metavar="FILE",
                        help="a train-supernet YAML (the model, image size and data)")
    source.add_argument("--supernet", metavar="DIR", help="a supernet checkpoint directory")
    p.add_argument("--out", metavar="PATH", help="the latency model file (default: "
                   "latency_model.json in the config's run_dir or the checkpoint directory)")
    p.add_argument("--device", default="cpu", metavar="D", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--samples", type=_positive_int, default=100, metavar="N",
                   help="sub-networks measured for the fit (default 100)")
    p.add_argument("--test-samples", type=_positive_int, default=50, metavar="N",
                   help="held-out sub-networks for Kendall tau (default 50)")
    p.add_argument("--batch-size", type=_positive_int, default=1, metavar="N",
                   help="latency batch size (default 1)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="auto: INT8 networks through onnxruntime on the CPU, others in torch")
    p.add_argument("--sampling", choices=("spread", "uniform"), default="spread",
                   help="sub-networks spread over the size range (default) or uniform per "
                        "dimension (almost all near the middle size)")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="N")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(command=cmd_profile)

    p = commands.add_parser(
        "export", help="export the Pareto front of a finished supernet run",
        description="Export each Pareto point of a finished supernet run to RUN_DIR/export/: "
                    "model.safetensors, manifest.json, model.onnx (and model.int8.onnx), "
                    "with a front.json / front.csv index and history.csv (every "
                    "evaluation).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.set_defaults(command=cmd_export)

    p = commands.add_parser(
        "report", help="write the HTML report of a run",
        description="Write report.html (self-contained) and its PNG figures for a run "
                    "directory: front projections, hypervolume over evaluations, front table.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--out", metavar="DIR", help="where to write it (default RUN_DIR/report)")
    p.set_defaults(command=cmd_report)

    p = commands.add_parser(
        "pick", help="choose the exported front point to deploy under latency / size limits",
        description="Choose, among the exported front points of a run (RUN_DIR/export/"
                    "front.json), the most accurate one that meets every limit given (ties: "
                    "the faster, then the smaller); print it, where its checkpoint is and how "
                    "to load it. Limits compare the values the search selected on (accuracy "
                    "on the val split). Exit status 1 when no point meets the limits, 2 on "
                    "bad input.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a pipeline run directory, or its export directory")
    p.add_argument("--max-latency-ms", type=_positive_float, metavar="MS",
                   help="latency_ms at most MS milliseconds (as measured by the run)")
    p.add_argument("--max-size-mb", type=_positive_float, metavar="MB",
                   help="size at most MB megabytes, decimal: 1 MB = 1,000,000 bytes")
    p.add_argument("--min-accuracy", type=_percent, metavar="PCT",
                   help="accuracy at least PCT percent, 0-100 (e.g. 90 for 90%%), on the val "
                        "split")
    p.add_argument("--out", metavar="DIR",
                   help="copy the point's checkpoint directory here (a new or empty "
                        "directory)")
    p.add_argument("--from-model", action="store_true",
                   help="ask the run's Pareto set model (hybridmoo paretoset) instead: it "
                        "extracts, measures and exports the network for the one limit given "
                        "(--max-latency-ms or --max-size-mb) or --preference, also where the "
                        "front has no point (default --out: RUN_DIR/paretoset/picked/KEY)")
    p.add_argument("--preference", type=_nonnegative_float, nargs=3,
                   metavar=("TASK", "LATENCY", "SIZE"),
                   help="with --from-model: how much accuracy, latency and size count")
    p.set_defaults(command=cmd_pick)

    p = commands.add_parser(
        "paretoset", help="train a Pareto set model on a run's supernet",
        description="Train a preference-conditioned model on a pipeline run's trained "
                    "supernet (saved in RUN_DIR/paretoset): it gives the sub-network for any "
                    "trade-off of accuracy, latency and size without a new search (hybridmoo "
                    "pick --from-model; algorithm 'paretoset' in a search config). Uses the "
                    "run's latency_model.json when there is one (hybridmoo profile), else "
                    "MACs as latency.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pipeline run directory")
    p.add_argument("--steps", type=_positive_int, metavar="N", help="training steps")
    p.add_argument("--solver", metavar="NAME",
                   help="gradient solver: chebyshev (default), epo, linear, mgda or upgrad")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training")
    p.set_defaults(command=cmd_paretoset)
    return parser


# -- commands --------------------------------------------------------------------------------


def _cmd_search(args: argparse.Namespace) -> int:
    from hybridmoo.config import load_run_config
    from hybridmoo.journal import RUN_FILE
    from hybridmoo.rundir import clear_run

    overrides = {"algorithm": args.algorithm, "max_evals": args.max_evals, "seed": args.seed,
                 "run_dir": args.run_dir, "backend": args.backend, "workers": args.workers}
    if args.ray_address is not None:
        if args.backend not in (None, "ray"):
            raise ConfigError(f"--ray-address needs --backend ray, not --backend {args.backend}")
        overrides.update(backend="ray", ray={"address": args.ray_address})
    from hybridmoo.config import read_config_file
    from hybridmoo.pipeline_config import is_pipeline_config

    if is_pipeline_config(read_config_file(args.config)):
        return run_pipeline_config(args, overrides)
    config = load_run_config(args.config, overrides)
    set_resume_hint(args, config.run_dir, "search", RUN_FILE)
    if args.overwrite:
        if args.resume:
            raise ConfigError("--resume continues a run and --overwrite deletes it: give one")
        clear_run(config.run_dir)
    console = make_console()
    if not args.quiet:
        space = config.space
        console.print(f"searching {config.problem or 'the inline space'} ({len(space)} dims, "
                      f"{space.size:,} configs) with {config.algorithm}: "
                      f"max_evals={config.max_evals}, seed={config.seed}"
                      + (" (resuming)" if args.resume else ""))
    result = config.run(resume=args.resume, progress=False if args.quiet else None)
    print_front(console, result, config.objectives, list(config.space.names), args.quiet,
                reference=config.reference is not None)
    return 0


def _cmd_algorithms(args: argparse.Namespace) -> int:
    from rich.table import Table

    from hybridmoo.proposers import DEFAULT_ALGORITHM, available

    table = Table(title="search engines (--algorithm NAME)", title_justify="left")
    for column in ("name", "library", "summary"):
        table.add_column(column)
    for spec in available():
        name = spec.name + (" (default)" if spec.name == DEFAULT_ALGORITHM else "")
        table.add_row(name, spec.library, spec.summary)
    make_console().print(table)
    return 0


def _cmd_problems(args: argparse.Namespace) -> int:
    import inspect

    from rich.table import Table

    from hybridmoo.problems import available_problems

    table = Table(title="problems (space: NAME, problem_options: {...})", title_justify="left")
    for column in ("name", "options", "summary"):
        table.add_column(column)
    for spec in available_problems():
        options = ", ".join(name if default is inspect.Parameter.empty else f"{name}={default!r}"
                            for name, default in spec.options().items())
        table.add_row(spec.name, options or "-", spec.summary)
    make_console().print(table)
    return 0


# -- argument types --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``hybridmoo search: error: ... (usage: hybridmoo search
    --help)``) instead of the whole usage text; sub-command parsers inherit this class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (usage: {self.prog} --help)\n")


def _backends() -> tuple[str, ...]:
    from hybridmoo.backends import BACKENDS

    return BACKENDS


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _percent(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100], got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None


def _one_line(text: str) -> str:
    return one_line(text) or "(no message)"
