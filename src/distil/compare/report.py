"""The compare table, its warnings and its one-line recommendation, from the scored grid and the timings.

Every number a reader decides on comes with its interval (`distil.evaluation.intervals`): the metric of
each row over seeds and test items, and each row's paired difference from the baseline row of the same
student shape. A budget that cannot separate anything is said out loud in the warnings, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distil.compare.scores import ItemScores
from distil.evaluation.intervals import Interval, bootstrap, point_value

__all__ = ["Row", "Summary", "chance_level", "format_table", "recommend", "summarise"]

TEACHER = "teacher"


@dataclass
class Row:
    """One line of the table: a method at a student shape (or the teacher).

    Attributes:
        student: Shape name (``teacher`` for the teacher).
        method: Method row name.
        seeds: The seeds scored.
        parameters: Parameter count of the model.
        metric: Mean over seeds of the test metric, with its interval over seeds and items.
        per_seed: The metric of each seed.
        keep: ``metric.value`` over the teacher's.
        vs_baseline: Paired difference from the baseline row of the same shape (``None`` for the
            baseline and the teacher).
        latency_ms: Runtime -> batch size -> median milliseconds per forward pass (same for every row of
            a shape: the methods do not change the architecture).
    """

    student: str
    method: str
    seeds: list[int]
    parameters: int
    metric: Interval
    per_seed: list[float]
    keep: float = math.nan
    vs_baseline: Interval | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Summary:
    """Everything the command prints and writes.

    Attributes:
        metric: The task's metric name.
        scale: Factor applied for display (100 for fractions, 1 for SQuAD's percent F1).
        baseline: Baseline row name.
        rows: Teacher first, then every shape's rows.
        test_items: Test items scored.
        split: Split scored (``test`` or ``dev``).
        chance: What a trivial predictor scores on the test items (``None`` when not defined).
        warnings: What the budget cannot tell.
        settings: Resamples, confidence, how the intervals are made.
        paired: ``"shape/a - shape/b"`` -> the paired difference of every two rows of a shape.
    """

    metric: str
    scale: float
    baseline: str
    rows: list[Row]
    test_items: int
    split: str
    chance: float | None
    warnings: list[str]
    settings: dict[str, Any]
    paired: dict[str, Interval] = field(default_factory=dict)


def chance_level(scores: ItemScores) -> float | None:
    """The metric of the best constant prediction on these items (majority class; 0 for correlations)."""
    if scores.metric in ("matthews_correlation", "pearson", "spearmanr"):
        return 0.0
    if scores.metric == "mean":
        return None
    refs = scores.refs.astype(np.int64)
    _values, counts = np.unique(refs, return_counts=True)
    if scores.metric == "accuracy":
        return float(counts.max() / len(refs))
    return point_value(scores.metric, np.ones((1, len(refs)), dtype=np.int64), refs)  # f1: all positive


def summarise(
    teacher: ItemScores,
    results: dict[tuple[str, str], dict[int, ItemScores]],
    parameters: dict[str, int],
    latency: dict[str, dict[str, dict[str, float]]],
    *,
    baseline: str,
    split: str,
    resamples: int,
    confidence: float,
) -> Summary:
    """Intervals, paired differences and warnings for the scored grid.

    Args:
        teacher: The teacher's test results.
        results: ``(shape, row)`` -> seed -> test results.
        parameters: Shape name (and ``teacher``) -> parameter count.
        latency: Shape name (and ``teacher``) -> runtime -> batch size -> median ms.
        baseline: The row the others are compared with at each shape.
        split: The split scored.
        resamples: Bootstrap resamples.
        confidence: Interval coverage.
    """
    refs = teacher.refs
    seeds = sorted({s for by_seed in results.values() for s in by_seed})
    stacked = {
        f"{shape}/{row}": np.stack([by_seed[s].preds for s in sorted(by_seed)])
        for (shape, row), by_seed in results.items()
    }
    stacked[TEACHER] = teacher.preds[None]
    # Every two rows of a shape, paired: the recommendation tells its row from each rival by these.
    keys = [f"{shape}/{row}" for shape, row in results]
    pairs = [
        (a, b)
        for a in keys
        for b in keys
        if a != b and a.split("/")[0] == b.split("/")[0] and len(stacked[a]) == len(stacked[b])
    ]
    singles, diffs = bootstrap(
        teacher.metric, stacked, refs, pairs=pairs, resamples=resamples, confidence=confidence
    )
    scale = 1.0 if teacher.metric == "mean" else 100.0
    t = singles[TEACHER]
    rows = [Row(TEACHER, TEACHER, [], parameters[TEACHER], t, [t.value], 1.0, None, latency.get(TEACHER, {}))]
    for (shape, row), by_seed in results.items():
        name = f"{shape}/{row}"
        per_seed = [point_value(teacher.metric, by_seed[s].preds[None], refs) for s in sorted(by_seed)]
        keep = singles[name].value / t.value if t.value else math.nan
        vs = diffs.get((name, f"{shape}/{baseline}"))
        rows.append(
            Row(shape, row, sorted(by_seed), parameters[shape], singles[name], per_seed, keep, vs,
                latency.get(shape, {}))
        )  # fmt: skip
    chance = chance_level(teacher)
    warnings = _warnings(rows, seeds, len(refs), chance, scale, baseline, teacher.name)
    settings = {
        "resamples": resamples,
        "confidence": confidence,
        "intervals": "two-level percentile bootstrap: test items and seeds both drawn with replacement",
        "paired": "same drawn items and seed positions for a row and the baseline of its shape; p is the "
        "two-sided bootstrap p-value of no difference",
    }
    paired = {f"{a} - {b}": d for (a, b), d in diffs.items()}
    return Summary(teacher.name, scale, baseline, rows, len(refs), split, chance, warnings, settings, paired)


def _warnings(
    rows: list[Row], seeds: list[int], items: int, chance: float | None, scale: float, baseline: str,
    metric: str,
) -> list[str]:  # fmt: skip
    out = []
    if len(seeds) == 1:
        out.append(
            "one seed: the intervals cover which test items were drawn, not training noise, and a "
            "difference between methods may be one seed's luck; run 3 or more (compare.seeds)."
        )
    elif len(seeds) == 2:
        out.append("two seeds: the seed part of each interval rests on two draws; 3 or more are better.")
    if items < 200:
        out.append(
            f"{items} test items: too few for the bootstrap, whose interval is zero-wide for a row that gets "
            "every item right; a larger test split separates more."
        )
    teacher = rows[0].metric
    if chance is not None and teacher.low <= chance:
        out.append(
            f"the teacher's {metric} ({teacher.value * scale:.1f}, interval down to "
            f"{teacher.low * scale:.1f}) is not clearly above what a constant prediction scores "
            f"({chance * scale:.1f}): no method can be told apart from chance; give the teacher more data "
            "or epochs."
        )
    if chance is not None and teacher.low > chance:
        near = [f"{r.student} {r.method}" for r in rows[1:] if r.metric.low <= chance]
        if near:
            out.append(
                f"{', '.join(near)}: interval reaches what a constant prediction scores "
                f"({chance * scale:.1f}); such a student has learned little beyond the label prior."
            )
    compared = [r for r in rows if r.vs_baseline is not None]
    if compared and not any(r.vs_baseline.excludes_zero for r in compared if r.vs_baseline is not None):
        out.append(f"no method is told apart from {baseline} at this budget (every paired interval holds 0).")
    return out


def _runtime_ms(row: Row, runtime: str, batch: str) -> float | None:
    value = row.latency_ms.get(runtime, {}).get(batch)
    return float(value) if value is not None else None


def recommend(
    summary: Summary, *, runtime: str, batch: str, max_latency_ms: float | None, min_keep: float | None
) -> str:
    """One line: the row to pick under the constraints, and what it cannot be told apart from.

    With ``min_keep`` alone the fastest shape keeping that share of the teacher's metric is picked (its
    best method); otherwise the most accurate row within ``max_latency_ms``.
    """
    students = [r for r in summary.rows if r.student != TEACHER]
    said = []
    fits = students
    if max_latency_ms is not None:
        said.append(f"{runtime} latency at batch {batch} <= {max_latency_ms:g} ms")
        fits = [
            r for r in fits if (ms := _runtime_ms(r, runtime, batch)) is not None and ms <= max_latency_ms
        ]
    if min_keep is not None:
        said.append(f"keeping >= {min_keep:.0%} of the teacher's {summary.metric}")
        fits = [r for r in fits if r.keep >= min_keep]
    under = f" under {' and '.join(said)}" if said else ""
    if not fits:
        best = max(students, key=lambda r: r.metric.value)
        return (
            f"Recommendation: no student meets the constraint{under}; the best is {best.student} "
            f"{best.method} ({_value(summary, best.metric)}, {best.keep:.1%} of the teacher)."
        )
    if min_keep is not None and max_latency_ms is None:
        fastest = min(fits, key=lambda r: _runtime_ms(r, runtime, batch) or math.inf)
        fits = [r for r in fits if r.student == fastest.student]
    pick = max(fits, key=lambda r: r.metric.value)
    ms = _runtime_ms(pick, runtime, batch)
    timing = f", {ms:.1f} ms ({runtime}, batch {batch})" if ms is not None else ""
    line = (
        f"Recommendation{under}: {pick.student} {pick.method}: {summary.metric} "
        f"{_value(summary, pick.metric)}, {pick.keep:.1%} of the teacher{timing}"
    )
    rivals = [r for r in students if r.student == pick.student and r is not pick and _tied(summary, pick, r)]
    if rivals:
        line += f"; not told apart from {', '.join(r.method for r in rivals)} at this budget"
    return line + "."


def _tied(summary: Summary, a: Row, b: Row) -> bool:
    """Whether two rows of a shape cannot be told apart: their paired interval holds 0."""
    d = summary.paired.get(f"{a.student}/{a.method} - {b.student}/{b.method}")
    if d is None:  # rows of different seed counts are not paired: the overlap of their own intervals
        return a.metric.low <= b.metric.high and b.metric.low <= a.metric.high
    return not d.excludes_zero


def _value(summary: Summary, i: Interval) -> str:
    s = summary.scale
    return f"{i.value * s:.1f} [{i.low * s:.1f}, {i.high * s:.1f}]"


def format_table(summary: Summary) -> str:
    """The markdown table, the intervals' method and the warnings."""
    s = summary.scale
    runtimes = list(dict.fromkeys(rt for r in summary.rows for rt in r.latency_ms))
    batches = list(dict.fromkeys(b for r in summary.rows for t in r.latency_ms.values() for b in t))
    pct = round(summary.settings["confidence"] * 100)
    head = ["student", "method", "params", f"{summary.metric} ({pct} % CI)", "per seed", "keep",
            f"vs {summary.baseline} (paired {pct} % CI; p)"]  # fmt: skip
    head += [f"{rt} ms b={'/'.join(batches)}" for rt in runtimes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.rows:
        vs = "-"
        if r.vs_baseline is not None:
            d = r.vs_baseline
            vs = f"{d.value * s:+.1f} [{d.low * s:+.1f}, {d.high * s:+.1f}]; p={d.p_value:.2f}"
        cells = [r.student, r.method, f"{r.parameters / 1e6:.1f}M", _value(summary, r.metric),
                 " / ".join(f"{v * s:.1f}" for v in r.per_seed), f"{r.keep:.1%}", vs]  # fmt: skip
        for rt in runtimes:
            ms = [r.latency_ms.get(rt, {}).get(b) for b in batches]
            cells.append(" / ".join(f"{m:.1f}" if m is not None else "-" for m in ms))
        lines.append("| " + " | ".join(cells) + " |")
    seeds = max((len(r.seeds) for r in summary.rows), default=0)
    lines += [
        "",
        f"{summary.test_items} {summary.split} items, {seeds} seed(s); intervals: "
        f"{summary.settings['intervals']} ({summary.settings['resamples']} resamples); paired: "
        f"{summary.settings['paired']}.",
    ]
    if summary.chance is not None:
        lines.append(f"A constant prediction scores {summary.chance * s:.1f} on these items.")
    lines += [f"warning: {w}" for w in summary.warnings]
    return "\n".join(lines)
