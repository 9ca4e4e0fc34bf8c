"""helpers.study.network_plots: each pruning rule its own colour and marker; no legend on data."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from helpers import paths  # noqa: E402
from helpers.study import network_plots  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return json.loads((paths.RESULTS / "network_pruning.json").read_text())


def rule_styles(ax) -> dict[str, set[tuple[str, str]]]:
    """(marker, colour) of every drawn point set, by the rule its legend label names first."""
    styles: dict[str, set[tuple[str, str]]] = {}
    for line in ax.lines:
        label = line.get_label()
        if line.get_marker() in ("None", "", None) or label.startswith("_"):
            continue
        rule = label.split(",")[0]
        styles.setdefault(rule, set()).add((line.get_marker(), to_hex(line.get_color())))
    return styles


def distinct_rules(ax) -> bool:
    """Each rule drawn with one (marker, colour), and no two rules sharing either."""
    styles = rule_styles(ax)
    if any(len(s) != 1 for s in styles.values()):
        return False
    markers = [next(iter(s))[0] for s in styles.values()]
    colours = [next(iter(s))[1] for s in styles.values()]
    return len(set(markers)) == len(markers) and len(set(colours)) == len(colours)


def test_pareto_each_rule_its_own_marker_and_colour_in_both_panels(result):
    from helpers.plots import STRATEGY_COLORS, STRATEGY_MARKERS

    fig = network_plots.pareto_by_epochs(result, "t")
    for ax in fig.axes:
        styles = rule_styles(ax)
        assert {"centroid", "l1"} <= set(styles)
        assert distinct_rules(ax)
        for rule, ((marker, colour),) in ((r, tuple(s)) for r, s in styles.items()
                                          if r in STRATEGY_MARKERS):
            assert (marker, colour) == (STRATEGY_MARKERS[rule], to_hex(STRATEGY_COLORS[rule]))
    plt.close(fig)


def test_the_check_catches_two_rules_drawn_alike(result, monkeypatch):
    from helpers.plots import STRATEGY_COLORS, STRATEGY_MARKERS

    monkeypatch.setitem(STRATEGY_MARKERS, "l1", STRATEGY_MARKERS["centroid"])
    monkeypatch.setitem(STRATEGY_COLORS, "l1", STRATEGY_COLORS["centroid"])
    fig = network_plots.pareto_by_epochs(result, "t")
    assert not any(distinct_rules(ax) for ax in fig.axes)  # the seeded defect is seen
    plt.close(fig)


def test_pareto_legends_sit_below_the_axes(result):
    fig = network_plots.pareto_by_epochs(result, "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 < ax.get_window_extent(renderer).y0  # wholly under the plotting area
    plt.close(fig)
