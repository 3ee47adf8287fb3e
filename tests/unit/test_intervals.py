"""Bootstrap intervals over seeds and test items, and the batched metrics they resample."""

from __future__ import annotations

import numpy as np
import pytest

from distil.evaluation.intervals import BATCHED_METRICS, bootstrap, point_value
from distil.metrics import METRICS


@pytest.mark.parametrize("name", ["accuracy", "f1", "matthews_correlation", "pearson", "spearmanr"])
def test_each_batched_metric_equals_the_reference_metric_row_by_row(name):
    rng = np.random.default_rng(0)
    regression = name in ("pearson", "spearmanr")
    for classes in (2, 3) if name == "matthews_correlation" else (2,):
        if regression:
            refs = rng.normal(size=(6, 40)).round(1)  # rounding makes ties, which spearman must rank alike
            preds = (refs + rng.normal(size=refs.shape)).round(1)
        else:
            refs = rng.integers(0, classes, size=(6, 40))
            preds = np.where(rng.random(refs.shape) < 0.7, refs, rng.integers(0, classes, size=refs.shape))
        got = BATCHED_METRICS[name](preds, refs)
        want = [METRICS[name](p, r) for p, r in zip(preds, refs, strict=True)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_degenerate_rows_score_zero_like_the_reference():
    refs = np.array([[0, 1, 0, 1]])
    constant = np.zeros((1, 4), dtype=np.int64)
    assert BATCHED_METRICS["matthews_correlation"](constant, refs)[0] == 0.0
    assert BATCHED_METRICS["f1"](constant, np.zeros_like(refs))[0] == 0.0
    assert BATCHED_METRICS["pearson"](constant.astype(float), refs.astype(float))[0] == 0.0


def test_one_seed_accuracy_interval_matches_the_normal_approximation():
    # n = 2000 items, 70 % correct: the percentile interval of the mean is close to p +- 1.96 sqrt(pq/n).
    rng = np.random.default_rng(1)
    refs = rng.integers(0, 2, size=2000)
    preds = np.where(np.arange(2000) < 1400, refs, 1 - refs)[None]
    singles, _ = bootstrap("accuracy", {"a": preds}, refs, resamples=4000, seed=0)
    half = 1.96 * np.sqrt(0.7 * 0.3 / 2000)
    a = singles["a"]
    assert a.value == pytest.approx(0.7)
    assert a.low == pytest.approx(0.7 - half, abs=0.004)
    assert a.high == pytest.approx(0.7 + half, abs=0.004)


def test_seed_noise_widens_the_interval():
    """Three seeds that disagree give a wider interval than three identical seeds on the same items."""
    rng = np.random.default_rng(2)
    refs = rng.integers(0, 2, size=400)
    same = np.stack([np.where(np.arange(400) < 300, refs, 1 - refs)] * 3)
    spread = np.stack([np.where(np.arange(400) < k, refs, 1 - refs) for k in (260, 300, 340)])
    singles, _ = bootstrap("accuracy", {"same": same, "spread": spread}, refs, resamples=2000)
    assert singles["same"].value == pytest.approx(singles["spread"].value)
    width = {k: v.high - v.low for k, v in singles.items()}
    assert width["spread"] > 1.3 * width["same"]


def test_paired_differences_tell_a_real_gap_from_none():
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 2, size=500)
    right = rng.random((3, 500)) < 0.85
    better = np.where(right, refs, 1 - refs)
    worse = np.where(right & (rng.random((3, 500)) < 0.9), refs, 1 - refs)  # wrong on ~8 % more items
    singles, diffs = bootstrap(
        "accuracy", {"better": better, "worse": worse, "twin": better.copy()}, refs,
        pairs=[("better", "worse"), ("twin", "better")], resamples=2000,
    )  # fmt: skip
    gap = diffs[("better", "worse")]
    assert gap.value == pytest.approx(singles["better"].value - singles["worse"].value)
    assert gap.excludes_zero and gap.low > 0 and gap.p_value is not None and gap.p_value < 0.01
    twin = diffs[("twin", "better")]
    assert (twin.low, twin.high, twin.value) == (0.0, 0.0, 0.0) and not twin.excludes_zero
    assert twin.p_value == 1.0


def test_pairing_narrows_the_difference_against_unpaired_intervals():
    """Two methods wrong on mostly the same items: the paired interval of the gap is far narrower than the
    two single intervals' overlap suggests."""
    rng = np.random.default_rng(4)
    refs = rng.integers(0, 2, size=300)
    right = rng.random(300) < 0.7
    a = np.where(right, refs, 1 - refs)[None]
    b = a.copy()
    b[0, np.flatnonzero(right)[:9]] = 1 - refs[np.flatnonzero(right)[:9]]  # b misses 9 more items
    singles, diffs = bootstrap("accuracy", {"a": a, "b": b}, refs, pairs=[("a", "b")], resamples=2000)
    assert singles["a"].low < singles["b"].high  # the single intervals overlap
    assert diffs[("a", "b")].low > 0  # the paired one still tells them apart


def test_intervals_are_reproducible_and_checked():
    refs = np.array([0, 1, 1, 0, 1])
    preds = np.array([[0, 1, 0, 0, 1], [1, 1, 1, 0, 1]])
    first = bootstrap("accuracy", {"a": preds}, refs, resamples=300, seed=5)
    assert first == bootstrap("accuracy", {"a": preds}, refs, resamples=300, seed=5)
    assert point_value("accuracy", preds, refs) == pytest.approx(0.8)  # (0.8 + 0.8) / 2
    with pytest.raises(ValueError, match="expected"):
        bootstrap("accuracy", {"a": preds[:, :3]}, refs)
    with pytest.raises(ValueError, match="cannot be paired"):
        bootstrap("accuracy", {"a": preds, "b": preds[:1]}, refs, pairs=[("a", "b")])


def test_per_item_scores_use_the_mean():
    values = np.array([[100.0, 0.0, 50.0, 50.0]])
    singles, _ = bootstrap("mean", {"qa": values}, np.zeros(4), resamples=500)
    assert singles["qa"].value == pytest.approx(50.0)
    assert 0.0 <= singles["qa"].low < 50.0 < singles["qa"].high <= 100.0
