"""The compare table's summary: intervals per row, paired differences, warnings, the recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from distil.compare.report import chance_level, format_table, recommend, summarise
from distil.compare.scores import ItemScores

N = 600
RNG = np.random.default_rng(0)
REFS = RNG.integers(0, 2, size=N)
RIGHT = RNG.random((3, N))  # one shared draw: rows with a lower threshold are right where others are


def _row(share: float, seeds: int = 3, wrong_below: float = 0.0) -> dict[int, ItemScores]:
    """Right where the shared draw is in [wrong_below, share): rows agree on most items."""
    right = (share > RIGHT) & (wrong_below <= RIGHT)
    return {
        s + 1: ItemScores("accuracy", "accuracy", np.where(right[s], REFS, 1 - REFS), REFS)
        for s in range(seeds)
    }


def _summary(teacher_share: float = 0.9, seeds: int = 3):  # type: ignore[no-untyped-def]
    teacher = ItemScores("accuracy", "accuracy", np.where(RIGHT[0] < teacher_share, REFS, 1 - REFS), REFS)
    results = {
        ("small", "finetune"): _row(0.70, seeds),
        # Right on 1.2 % more items and wrong on 1 % others: not told apart from finetune.
        ("small", "kd"): _row(0.712, seeds, wrong_below=0.01),
        ("big", "finetune"): _row(0.80, seeds),
        ("big", "ted"): _row(0.89, seeds),
    }
    latency = {"teacher": {"pytorch-fp32": {"1": 20.0}}, "small": {"pytorch-fp32": {"1": 5.0}},
               "big": {"pytorch-fp32": {"1": 10.0}}}  # fmt: skip
    parameters = {"teacher": 100, "small": 30, "big": 60}
    return summarise(
        teacher,
        results,
        parameters,
        latency,
        baseline="finetune",
        split="test",
        resamples=500,
        confidence=0.95,
    )


def test_rows_carry_intervals_and_paired_differences_from_the_baseline():
    summary = _summary()
    names = [(r.student, r.method) for r in summary.rows]
    assert names == [("teacher", "teacher"), ("small", "finetune"), ("small", "kd"), ("big", "finetune"),
                     ("big", "ted")]  # fmt: skip
    by = {(r.student, r.method): r for r in summary.rows}
    kd, ted = by[("small", "kd")], by[("big", "ted")]
    assert kd.vs_baseline is not None and not kd.vs_baseline.excludes_zero
    assert ted.vs_baseline is not None and ted.vs_baseline.low > 0
    assert by[("big", "finetune")].vs_baseline is None
    assert ted.keep == pytest.approx(ted.metric.value / summary.rows[0].metric.value)
    assert "big/ted - big/finetune" in summary.paired and "small/kd - big/ted" not in summary.paired
    assert summary.warnings == []  # 3 seeds, 600 items, a teacher far above chance, a separated row
    table = format_table(summary)
    assert "| big | ted | 0.0M |" in table and "vs finetune (paired 95 % CI; p)" in table


def test_the_recommendation_reads_the_constraints_and_names_only_real_ties():
    summary = _summary()
    kw = {"runtime": "pytorch-fp32", "batch": "1"}
    fast = recommend(summary, max_latency_ms=6.0, min_keep=None, **kw)
    assert fast.startswith("Recommendation under pytorch-fp32 latency at batch 1 <= 6 ms: small ")
    pick = fast.split(": ")[1].split()[1]  # the better of the two small rows, on this draw
    other = {"finetune": "kd", "kd": "finetune"}[pick]
    assert fast.endswith(f"not told apart from {other} at this budget.")
    keep = recommend(summary, max_latency_ms=None, min_keep=0.95, **kw)
    assert "big ted" in keep and "not told apart" not in keep  # the paired gap to finetune is real
    none = recommend(summary, max_latency_ms=1.0, min_keep=None, **kw)
    assert none.startswith("Recommendation: no student meets the constraint under") and "big ted" in none


def test_budgets_that_cannot_separate_are_warned_about():
    one = _summary(seeds=1)
    assert any(w.startswith("one seed") for w in one.warnings)
    chance = _summary(teacher_share=0.52)
    assert any("not clearly above what a constant prediction scores" in w for w in chance.warnings)
    near = _summary()  # majority class ~50 %: no student is near it
    assert not any("interval reaches" in w for w in near.warnings)


def test_chance_level_is_the_best_constant_prediction():
    refs = np.array([1, 1, 1, 0])
    assert chance_level(ItemScores("accuracy", "accuracy", refs, refs)) == pytest.approx(0.75)
    assert chance_level(ItemScores("f1", "f1", refs, refs)) == pytest.approx(6 / 7)  # all positive
    assert chance_level(ItemScores("matthews_correlation", "mcc", refs, refs)) == 0.0
    assert chance_level(ItemScores("mean", "f1", refs.astype(float), np.zeros(4))) is None


def test_a_student_at_the_label_prior_is_named():
    teacher = ItemScores("accuracy", "accuracy", np.where(RIGHT[0] < 0.9, REFS, 1 - REFS), REFS)
    majority = {
        s: ItemScores("accuracy", "accuracy", np.full(N, int(REFS.mean() > 0.5)), REFS) for s in (1, 2, 3)
    }
    summary = summarise(
        teacher, {("small", "finetune"): majority, ("small", "kd"): _row(0.8)},
        {"teacher": 1, "small": 1}, {}, baseline="finetune", split="test", resamples=300, confidence=0.95,
    )  # fmt: skip
    near = [w for w in summary.warnings if "interval reaches" in w]
    assert len(near) == 1 and near[0].startswith("small finetune: ")
