"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from distil.reporting.sources import Point, Run

__all__ = ["DPI", "FIGSIZE", "dev_curves", "interval_tradeoff", "loss_curves", "pareto", "tradeoff"]

FIGSIZE = (8.0, 5.0)  # inches; with DPI this gives 800 x 500 pixel images
DPI = 100


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(log: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    # A resumed run re-logs the steps after its checkpoint; the later record wins.
    by_step = {int(r["step"]): float(r[key]) for r in log if isinstance(r.get(key), int | float)}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def loss_curves(run: Run, path: Path) -> bool:
    """One line per loss term of ``run`` against the step; returns False (nothing written) without losses."""
    keys = sorted(
        {k for r in run.log for k in r if k.startswith("loss/")}, key=lambda k: (k != "loss/total", k)
    )
    if not keys:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    for key in keys:
        steps, values = _series(run.log, key)
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=key.removeprefix("loss/"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over the logging window)")
    ax.set_title(f"Training losses: {run.name}")
    ax.grid(alpha=0.3)
    ax.legend(title="term")
    fig.savefig(path)
    return True


def dev_curves(runs: Sequence[Run], path: Path) -> bool:
    """Every dev metric of every run against the step; returns False without evaluation records."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    keys = sorted({k for run in runs for r in run.log for k in r if k.startswith("eval/")})
    styles = dict(zip(keys, ["-", "--", ":", "-."] * len(keys), strict=False))
    for i, run in enumerate(runs):
        for key in keys:
            steps, values = _series(run.log, key)
            if steps:
                label = f"{run.name}: {key.removeprefix('eval/')}"
                ax.plot(steps, values, marker="o", linestyle=styles[key], color=f"C{i}", label=label)
                drawn += 1
    if not drawn:
        return False
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("dev metric (fraction, or correlation)")
    ax.set_title("Dev metrics during training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path)
    return True


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (smaller x and larger y are better), sorted by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


_MARKERS = {"pytorch-fp32": "o", "onnx-fp32": "s", "onnx-int8": "^", "": "o"}


def tradeoff(points: Sequence[Point], attr: str, xlabel: str, metric: str, title: str, path: Path) -> bool:
    """Scatter the metric against ``attr`` (``latency_ms`` or ``size_mb``) with the Pareto front.

    One colour per model and one marker per runtime; the x axis turns logarithmic when the values span
    more than a factor of 20.

    Returns:
        False (nothing written) when no point has a value for ``attr``.
    """
    usable = [p for p in points if getattr(p, attr) is not None]
    if not usable:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(p.model for p in usable))}
    for p in usable:
        marker = _MARKERS.get(p.runtime, "D")
        ax.scatter([getattr(p, attr)], [p.metric], s=60, color=colours[p.model], marker=marker, label=p.label)
    front = pareto([(getattr(p, attr), p.metric) for p in usable])
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        ax.plot(xs, ys, linestyle="--", color="grey", label="Pareto front", zorder=0)
    values = [getattr(p, attr) for p in usable]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return True


#: A point of `interval_tradeoff`: label, group (one colour each), x, y, y low, y high.
IntervalPoint = tuple[str, str, float | None, float, float, float]


def interval_tradeoff(points: Sequence[IntervalPoint], xlabel: str, ylabel: str, path: Path) -> bool:
    """The metric against latency, each point with its interval as a vertical bar, one colour per group.

    Returns:
        False (nothing written) when no point has an x value.
    """
    usable = [p for p in points if p[2] is not None]
    if not usable:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(p[1] for p in usable))
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    xs = [float(p[2]) for p in usable if p[2] is not None]
    # Rows of one student shape share its latency: each group is shifted a little so the bars stay apart.
    step = 0.012 * (max(xs) - min(xs) or max(xs) or 1.0)
    for label, group, x, y, low, high in usable:
        assert x is not None
        x += (groups.index(group) - (len(groups) - 1) / 2) * step
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4, color=colours[group])
        if label:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(-6, 4), ha="right", fontsize=8)
    for group, colour in colours.items():
        ax.scatter([], [], color=colour, label=group)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return True
