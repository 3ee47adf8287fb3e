"""Confidence intervals of a test metric over training seeds and test items, and paired differences.

A result is a method's predictions on the same test items for each of its seeds. Two sources of noise
move the metric: which items the test set happened to hold, and which seed training ran with. The
interval resamples both (a two-level percentile bootstrap): each resample draws the test items with
replacement and the seeds with replacement, and scores the mean over the drawn seeds of the metric on
the drawn items. Two methods are compared *paired*: both are scored on the same drawn items and the same
drawn seed positions (seed ``k`` of one method beside seed ``k`` of the other, since they share the data
order), so the difference's interval leaves out the noise the two share.

Metrics are computed for a whole block of resamples at once (``[B, n]`` arrays); each equals its
`distil.metrics` counterpart on one row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["BATCHED_METRICS", "Interval", "bootstrap", "point_value"]

BatchedMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]
_BLOCK = 250  # resamples scored per block: bounds memory at seeds x block x items values


def _accuracy(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (p == r).mean(axis=-1)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    tp = ((p == 1) & (r == 1)).sum(-1)
    wrong = (p != r).sum(-1)  # false positives and false negatives together
    denom = 2 * tp + wrong
    return np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


def _mcc(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    # The multiclass form (Gorodkin 2004), as scikit-learn computes it; 0 where it is undefined.
    classes = np.union1d(np.unique(p), np.unique(r))
    n = p.shape[-1]
    correct = (p == r).sum(-1).astype(np.float64)
    pk = np.stack([(p == c).sum(-1) for c in classes], -1).astype(np.float64)
    tk = np.stack([(r == c).sum(-1) for c in classes], -1).astype(np.float64)
    cov = correct * n - (pk * tk).sum(-1)
    denom = np.sqrt((n * n - (pk**2).sum(-1)) * (n * n - (tk**2).sum(-1)))
    return np.divide(cov, denom, out=np.zeros(cov.shape), where=denom > 0)


def _pearson(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    pc = p - p.mean(-1, keepdims=True)
    rc = r - r.mean(-1, keepdims=True)
    denom = np.sqrt((pc**2).sum(-1) * (rc**2).sum(-1))
    return np.divide((pc * rc).sum(-1), denom, out=np.zeros(denom.shape), where=denom > 0)


def _spearman(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _pearson(stats.rankdata(p, axis=-1), stats.rankdata(r, axis=-1))


def _mean(values: np.ndarray, _: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1)


#: Metric key -> batched metric of (predictions ``[..., n]``, references ``[..., n]``). ``mean``: the
#: predictions are per-item scores (SQuAD's per-question F1) and the references are ignored.
BATCHED_METRICS: dict[str, BatchedMetric] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _mcc,
    "pearson": _pearson,
    "spearmanr": _spearman,
    "mean": _mean,
}


@dataclass(frozen=True)
class Interval:
    """A point value and its percentile-bootstrap interval.

    Attributes:
        value: The metric on every test item, averaged over the seeds.
        low: Lower end of the interval.
        high: Upper end.
        p_value: For a difference: the two-sided bootstrap p-value of "no difference" (twice the smaller
            share of resampled differences on either side of zero); ``None`` for a single result.
    """

    value: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below zero (a difference told apart at this confidence)."""
        return self.low > 0 or self.high < 0


def point_value(metric: str, preds: np.ndarray, refs: np.ndarray) -> float:
    """The metric of each seed's predictions ``[S, n]`` on all items, averaged over the seeds."""
    return float(BATCHED_METRICS[metric](preds, np.broadcast_to(refs, preds.shape)).mean())


def bootstrap(
    metric: str,
    results: Mapping[str, np.ndarray],
    refs: np.ndarray,
    *,
    pairs: Sequence[tuple[str, str]] = (),
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, Interval], dict[tuple[str, str], Interval]]:
    """Intervals of each result and of the paired differences ``a - b`` for each pair.

    Args:
        metric: A key of `BATCHED_METRICS`.
        results: Name -> predictions ``[S, n]`` (one row per seed, every row on the same ``n`` items).
            Results compared in a pair must have the same number of seeds, in the same order.
        refs: References ``[n]``.
        pairs: ``(a, b)`` names whose difference is wanted.
        resamples: Bootstrap resamples.
        confidence: Interval coverage, e.g. 0.95.
        seed: Seed of the resampling (the intervals are reproducible).

    Returns:
        Intervals by name, and intervals of the differences by pair.

    Raises:
        ValueError: Results of different lengths, or a pair of results with different seed counts.
    """
    fn = BATCHED_METRICS[metric]
    n = len(refs)
    for name, preds in results.items():
        if preds.ndim != 2 or preds.shape[1] != n:
            raise ValueError(f"{name}: predictions of shape {preds.shape}, expected [seeds, {n}].")
    for a, b in pairs:
        if len(results[a]) != len(results[b]):
            raise ValueError(f"{a} and {b} have different numbers of seeds: they cannot be paired.")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in results}
    done = 0
    while done < resamples:
        block = min(_BLOCK, resamples - done)
        items = rng.integers(0, n, size=(block, n))
        # One seed draw per seed count, shared by every result with that many seeds (the pairing).
        seed_draws = {
            s: rng.integers(0, s, size=(block, s)) for s in sorted({len(p) for p in results.values()})
        }
        ref_block = refs[items]
        for name, preds in results.items():
            per_seed = np.stack([fn(preds[k][items], ref_block) for k in range(len(preds))])  # [S, block]
            chosen = np.take_along_axis(per_seed.T, seed_draws[len(preds)], axis=1)  # [block, S]
            draws[name].append(chosen.mean(axis=1))
        done += block
    values = {name: np.concatenate(v) for name, v in draws.items()}
    tail = (1 - confidence) / 2 * 100

    def interval(point: float, samples: np.ndarray, with_p: bool) -> Interval:
        low, high = np.percentile(samples, [tail, 100 - tail])
        p = min(1.0, 2 * min(float((samples <= 0).mean()), float((samples >= 0).mean()))) if with_p else None
        return Interval(point, float(low), float(high), p)

    points = {name: point_value(metric, preds, refs) for name, preds in results.items()}
    singles = {name: interval(points[name], values[name], False) for name in results}
    diffs = {(a, b): interval(points[a] - points[b], values[a] - values[b], True) for a, b in pairs}
    return singles, diffs
