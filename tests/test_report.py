"""The run report: self-contained HTML + PNGs, refined points told apart, read-only on runs."""

import json
import re
import shutil

import pytest

from hybridmoo import Choice, IntRange, Objective, SearchSpace, search
from hybridmoo.archive import ParetoArchive
from hybridmoo.cli import main
from hybridmoo.journal import Journal
from hybridmoo.objectives import EvalResult
from hybridmoo.report import read_run, report_run, write_report
from hybridmoo.space import Candidate

OBJECTIVES = [Objective("accuracy", "max", "%"), Objective("latency_ms", "min", "ms"),
              Objective("size_bytes", "min", "B")]
SPACE = SearchSpace({"width": IntRange(1, 16), "depth": IntRange(1, 6),
                     "act": Choice(["relu", "<b>gelu</b>"])})
PNG = b"\x89PNG\r\n\x1a\n"


def evaluate(config):
    w, d = config["width"], config["depth"]
    bonus = 2.0 if config["act"] == "relu" else 0.0
    return {"accuracy": 100 - 60 / (w * d) + bonus, "latency_ms": 0.3 * w * d + d,
            "size_bytes": 1000 * w * w * d}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A black-box run with two refined records (each better than its parent)."""
    run_dir = tmp_path_factory.mktemp("run")
    result = search(SPACE, evaluate, OBJECTIVES, algorithm="random", max_evals=25, seed=1,
                    run_dir=run_dir, progress=False)
    with Journal(run_dir) as journal:
        for parent in result.front[:2]:
            values = {**parent.values, "accuracy": parent.values["accuracy"] + 0.5}
            journal.append(EvalResult(Candidate(parent.config, "refine", (parent.key,)), values))
    return run_dir


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "report" not in p.parts}


def test_cli_report_writes_a_self_contained_html_and_pngs(run_dir, capsys):
    before = _snapshot(run_dir)
    assert main(["report", str(run_dir)]) == 0
    out = run_dir / "report"
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert _snapshot(run_dir) == before  # nothing in the run directory was touched
    names = {"front_0_1.png", "front_0_2.png", "hypervolume.png"}
    assert {p.name for p in out.iterdir()} == names | {"report.html"}
    assert all((out / n).read_bytes().startswith(PNG) for n in names)
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "accuracy [%]" in page and "hypervolume" in page.lower()


def test_refined_points_are_told_apart(run_dir, tmp_path):
    page = report_run(run_dir, tmp_path / "r").read_text()
    run = read_run(run_dir)
    archive = ParetoArchive(run.objectives)
    for r in run.history:
        archive.add(r)
    rows = re.findall(r'<tr class="origin-(\w+)" data-origin="(\w+)">', page)
    assert len(rows) == len(archive.front)
    assert rows.count(("refine", "refine")) == 2  # both refined records dominate their parents
    assert {o for _, o in rows} - {"refine"} == {"random"}
    assert "refined results</th><td>2 (2 on the front)" in page


def test_front_table_links_exported_checkpoints(run_dir, tmp_path):
    run = read_run(run_dir)
    archive = ParetoArchive(run.objectives)
    for r in run.history:
        archive.add(r)
    keys = [r.key for r in archive.front]
    export = tmp_path / "export"
    export.mkdir()
    points = [{"key": k, "path": f"{i:02d}_{k[:8]}"} for i, k in enumerate(keys[:2])]
    points.append({"key": keys[2], "path": "../../etc"})  # never turned into a link
    (export / "front.json").write_text(json.dumps({"points": points}))
    page = write_report(run.history, run.objectives, tmp_path / "report",
                        export_index=export / "front.json").read_text()
    links = re.findall(r'<a href="([^"]*)"', page)
    assert links == [f"../export/{p['path']}/" for p in points[:2]]
    assert page.count("not exported") == len(keys) - 2


def test_values_from_the_journal_are_escaped(run_dir, tmp_path):
    page = report_run(run_dir, tmp_path / "r").read_text()
    assert "<b>gelu</b>" not in page and "&lt;b&gt;gelu&lt;/b&gt;" in page


def test_a_truncated_journal_is_reported_not_repaired(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    journal = copy / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"candidate": {"con')
    before = journal.read_bytes()
    page = report_run(copy).read_text()
    assert "skipped a truncated last journal line" in page
    assert journal.read_bytes() == before


def test_one_objective_gets_only_the_hypervolume_figure(tmp_path):
    history = [EvalResult(Candidate({"x": i}), {"loss": float(10 - i)}) for i in range(5)]
    path = write_report(history, [Objective("loss")], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hypervolume.png", "report.html"]
    assert path.read_text().count('data-origin="init"') == 1


def test_out_option_and_bad_directories(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run directory (no run.json)" in capsys.readouterr().err
