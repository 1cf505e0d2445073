"""Readable units: sizes in B / KB / MB, and the report's figure axes (no "1e6" offsets)."""

import pytest

from hybridmoo.objectives import Objective
from hybridmoo.report import _format_axis
from hybridmoo.units import axis_units, format_ms, format_percent, format_size, size_unit

SIZE = Objective("size_bytes", "min", "B")
LATENCY = Objective("latency_ms", "min", "ms")
ACCURACY = Objective("accuracy", "max", "%")


@pytest.mark.parametrize(("n_bytes", "text"), [
    (0, "0 B"), (850, "850 B"), (999, "999 B"), (1000, "1 KB"), (12_345, "12.3 KB"),
    (270_264, "270 KB"), (999_400, "999 KB"), (999_960, "1 MB"), (2_500_000, "2.5 MB"),
    (46_800_000, "46.8 MB"), (3.2e9, "3.2 GB"),
])
def test_format_size_picks_the_unit_after_rounding(n_bytes, text):
    assert format_size(n_bytes) == text


def test_latency_and_percent_texts():
    assert format_ms(0.42137) == "0.421 ms" and format_ms(12.0) == "12 ms"
    assert format_percent(91.2345) == "91.23%"
    assert size_unit(12_300) == ("KB", 1e3)


def test_axis_units_scale_bytes_from_the_largest_value():
    kb = axis_units(SIZE, [12_300, 45_000])
    assert kb.label == "size [KB] (lower is better)" and kb.tick(12_300) == "12.3"
    mb = axis_units(SIZE, [400_000, 2_600_000])
    assert mb.label == "size [MB] (lower is better)" and mb.tick(1_500_000) == "1.5"
    assert axis_units(LATENCY, [0.1, 0.3]).label == "latency [ms] (lower is better)"
    assert axis_units(LATENCY, [0.1]).tick(0.30000000000000004) == "0.3"
    pct = axis_units(ACCURACY, [80.0, 95.0])
    assert pct.label == "accuracy [%] (higher is better)" and pct.tick(85) == "85%"
    assert axis_units(Objective("error"), [0.1]).label == "error (lower is better)"


def test_report_axes_show_mb_and_percent_without_an_offset():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sizes, accuracies = [1_200_000.0, 1_350_000.0, 1_500_000.0], [80.0, 85.0, 90.0]
    ax.scatter(sizes, accuracies)
    _format_axis(ax.xaxis, SIZE, sizes)
    _format_axis(ax.yaxis, ACCURACY, accuracies)
    fig.canvas.draw()
    xticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    yticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ax.get_xlabel() == "size [MB] (lower is better)"
    assert "1.3" in xticks and all(float(t) < 2 for t in xticks)
    assert ax.xaxis.get_offset_text().get_text() == ""  # no "1e6" beside the axis
    assert "80%" in yticks and all(t.endswith("%") for t in yticks)
