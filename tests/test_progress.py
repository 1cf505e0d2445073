"""Progress: plain lines when stderr is not a terminal (logs, CI, nohup), nothing when off."""

import time

from hybridmoo.progress import Progress, clock


def test_off_a_terminal_plain_lines_come_every_few_seconds_and_at_the_end(capsys):
    with Progress(10, None, title="search", every_s=0.05) as bar:
        bar.update(1, "front 1")
        time.sleep(0.06)
        bar.update(4, "front 3  HV 0.5")
        bar.update(5, "front 3  HV 0.6")  # too soon after the last line: not printed
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("search: 4/10 (40%) front 3  HV 0.5, ")
    assert "elapsed" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("search: 5/10 (50%) front 3  HV 0.6, ")


def test_disabled_progress_prints_nothing(capsys):
    with Progress(3, False, every_s=0.0) as bar:
        bar.update(1)
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_the_search_shows_progress_in_a_log(capsys):
    from hybridmoo import search
    from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate

    search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=5, seed=0)
    err = capsys.readouterr().err
    assert "search: 5/5 (100%) front" in err


def test_clock():
    assert [clock(s) for s in (3.2, 123, 3723)] == ["3s", "2m03s", "1h02m03s"]
