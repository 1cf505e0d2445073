"""hybridmoo.pick / ``hybridmoo pick`` on a real exported pipeline run: the most accurate point
within the limits, its checkpoint copied and runnable; no point within them is one clear line;
and the export's history.csv of every evaluation."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

import hybridmoo
from hybridmoo.cli import main
from hybridmoo.data import digits
from hybridmoo.errors import ConfigError
from hybridmoo.export import load_subnet, read_front, read_manifest
from hybridmoo.journal import Journal
from hybridmoo.pick import NoPointQualifies, pick
from hybridmoo.supernet.training import accuracy
from hybridmoo.units import format_ms

torch.set_num_threads(1)
@pytest.fixture
def run_dir(finished_pipeline):
    """A finished, exported pipeline run (tests/conftest.py; read only)."""
    return finished_pipeline.run_dir


def values(run_dir):
    """Each exported front point as (path, {metric: value})."""
    return [(p["path"], {k: m["value"] for k, m in p["metrics"].items()})
            for p in read_front(run_dir / "export")["points"]]


def discriminating_limit(points):
    """A limit (keyword, value) that the most accurate point misses and another point meets:
    on a Pareto front some point is faster or smaller than the most accurate one."""
    best = max(points, key=lambda p: p[1]["accuracy"])[1]
    for metric, keyword, scale in (("latency_ms", "max_latency_ms", 1.0),
                                   ("size_bytes", "max_size_mb", 1e6)):
        below = [v[metric] for _, v in points if v[metric] < best[metric]]
        if below:
            return metric, keyword, (max(below) + best[metric]) / 2 / scale, scale
    raise AssertionError("the front's most accurate point is also its fastest and smallest")


def test_pick_returns_the_most_accurate_point_within_the_limit_and_copies_it(run_dir, tmp_path):
    points = values(run_dir)
    assert len(points) >= 2
    metric, keyword, limit, scale = discriminating_limit(points)
    meeting = [(path, v) for path, v in points if v[metric] <= limit * scale]
    assert 0 < len(meeting) < len(points)
    expected = max(meeting, key=lambda p: (p[1]["accuracy"], -p[1]["latency_ms"]))

    out = tmp_path / "deploy"
    chosen = hybridmoo.pick(run_dir, out=out, **{keyword: limit})
    assert chosen.exported == run_dir / "export" / expected[0]
    assert chosen.metrics["accuracy"] == expected[1]["accuracy"]
    assert chosen.metrics[metric] <= limit * scale
    assert (chosen.checkpoint, chosen.copied) == (out, True)
    assert (chosen.qualifying, chosen.front_size) == (len(meeting), len(points))
    assert read_manifest(out)["lineage"]["key"] == chosen.key

    # the copy is the point: loaded without the supernet, it runs and scores its accuracy
    net = load_subnet(out)
    data = digits(32)
    x = data.val.tensors[0][:16]
    with torch.no_grad():
        assert net(x).shape == (16, 10)
    assert 100.0 * accuracy(net, data.val) == pytest.approx(chosen.metrics["accuracy"])

    again = pick(run_dir / "export", out=out, **{keyword: limit})  # the export dir works too
    assert (again.key, again.copied) == (chosen.key, False)  # out already holds the point


def test_without_limits_the_most_accurate_point_is_picked(run_dir):
    points = values(run_dir)
    chosen = pick(run_dir)
    assert chosen.metrics["accuracy"] == max(v["accuracy"] for _, v in points)
    assert chosen.checkpoint == chosen.exported and not chosen.copied and chosen.limits == ()


def test_no_point_within_the_limits_names_the_limit_and_the_closest_point(run_dir):
    points = values(run_dir)
    fastest = min(points, key=lambda p: p[1]["latency_ms"])
    with pytest.raises(NoPointQualifies) as info:
        pick(run_dir, max_latency_ms=fastest[1]["latency_ms"] / 2)
    message = str(info.value)
    assert "no front point has latency_ms <=" in message
    assert f"the fastest is {format_ms(fastest[1]['latency_ms'])}" in message
    assert fastest[0] in message and "accuracy" in message and "\n" not in message

    smallest = min(v["size_bytes"] for _, v in points)
    with pytest.raises(NoPointQualifies, match=r"size <= [0-9.e-]+ MB; the smallest is"):
        pick(run_dir, max_size_mb=smallest / 2e6)
    with pytest.raises(NoPointQualifies, match="accuracy >= 100%; the most accurate is"):
        pick(run_dir, min_accuracy=100)


def test_limits_each_met_but_not_together_name_the_closest_point(run_dir):
    points = values(run_dir)
    fastest = min(points, key=lambda p: p[1]["latency_ms"])[1]
    smallest = min(points, key=lambda p: p[1]["size_bytes"])[1]
    if fastest is smallest:
        pytest.skip("one point is both the fastest and the smallest")
    with pytest.raises(NoPointQualifies, match=r"at once .* the closest is"):
        pick(run_dir, max_latency_ms=fastest["latency_ms"],
             max_size_mb=smallest["size_bytes"] / 1e6)


@pytest.mark.parametrize(("limits", "message"), [
    ({"max_latency_ms": -1}, "max_latency_ms must be > 0, got -1"),
    ({"max_latency_ms": 0}, "max_latency_ms must be > 0"),
    ({"max_size_mb": float("nan")}, "max_size_mb must be a finite number"),
    ({"max_size_mb": True}, "max_size_mb must be a finite number"),
    ({"min_accuracy": 150}, r"min_accuracy must be in \[0, 100\] \(percent\), got 150"),
    ({"min_accuracy": "90"}, "min_accuracy must be a finite number"),
])
def test_bad_limits_are_config_errors(run_dir, limits, message):
    with pytest.raises(ConfigError, match=message):
        pick(run_dir, **limits)


def test_bad_directories_and_outs(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        pick(tmp_path / "missing", max_latency_ms=1)
    with pytest.raises(ConfigError, match=r"no exported front .* hybridmoo export"):
        pick(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no copy of point"):
        pick(run_dir, out=busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        pick(run_dir, out=tmp_path / "file")


def test_cli_pick_prints_the_point_and_how_to_load_it(run_dir, tmp_path, capsys):
    points = values(run_dir)
    _, keyword, limit, _ = discriminating_limit(points)
    flag = "--" + keyword.replace("_", "-")
    out = tmp_path / "deploy"
    assert main(["pick", str(run_dir), flag, repr(limit), "--out", str(out)]) == 0
    chosen = pick(run_dir, **{keyword: limit})
    text = capsys.readouterr().out
    assert f"picked {chosen.exported.name}" in text and chosen.key[:12] in text
    assert f"accuracy {chosen.metrics['accuracy']:.2f}%" in text
    assert re.search(r"size [0-9.]+ (KB|MB)", text)
    assert f"checkpoint: {out}" in text and f'hybridmoo.load_subnet("{out}")' in text
    assert read_manifest(out)["lineage"]["key"] == chosen.key


def test_cli_pick_without_a_point_or_with_bad_input_is_one_line(run_dir, tmp_path, capsys):
    fastest = min(v["latency_ms"] for _, v in values(run_dir))
    assert main(["pick", str(run_dir), "--max-latency-ms", repr(fastest / 2)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hybridmoo pick: no front point has latency_ms <=")
    assert err.count("\n") == 1 and "Traceback" not in err

    assert main(["pick", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1

    assert main(["pick", str(run_dir), "--max-latency-ms", "-1"]) == 2
    assert "--max-latency-ms: must be a positive number" in capsys.readouterr().err
    assert main(["pick", str(run_dir), "--min-accuracy", "0.9x"]) == 2
    assert "--min-accuracy: must be a number" in capsys.readouterr().err


def test_the_export_writes_the_history_of_every_evaluation(run_dir):
    with Journal(run_dir) as journal:
        records = journal.read()
    with (run_dir / "export" / "history.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["evaluation", "key", "origin", "parents", "ok", "reason",
                                 "accuracy [%]", "latency_ms [ms]", "size_bytes [B]",
                                 "elapsed_s", "config"]
    assert len(rows) == len(records) > len(values(run_dir))
    assert {r.candidate.origin for r in records} >= {"random", "refine"}
    for n, (row, r) in enumerate(zip(rows, records, strict=True), 1):
        assert row["evaluation"] == str(n) and row["key"] == r.key
        assert row["origin"] == r.candidate.origin
        assert row["parents"].split() == list(r.candidate.parents)
        assert row["ok"] == str(r.ok) and row["reason"] == (r.reason or "")
        if r.ok:
            assert float(row["accuracy [%]"]) == r.values["accuracy"]
        assert float(row["elapsed_s"]) == r.elapsed_s
        assert json.loads(row["config"]) == r.config
