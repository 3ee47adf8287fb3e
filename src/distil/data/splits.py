"""A dev split carved out of the training data, and the texts training and evaluation data share.

``data.split_dev`` holds out a fraction (``0 < v < 1``) or a count (``v >= 1``) of the training rows for
evaluation and model selection: seeded by ``data.split_seed`` (not ``train.seed``, so runs with different
training seeds are scored on the same rows), stratified by label for classification (each class keeps its
share, rounded by largest remainders), the two parts disjoint. Whatever the split, evaluation rows whose
text also appears in the training data are counted; ``data.drop_overlap`` removes those training rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import Dataset

from distil.errors import ConfigError, DataError

__all__ = ["check_split_dev", "held_out_count", "overlap", "split_rows"]


def check_split_dev(value: float | None) -> None:
    """``data.split_dev`` is a fraction in (0, 1) or a whole count >= 1.

    Raises:
        ConfigError: Anything else.
    """
    if value is None:
        return
    if not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
        raise ConfigError(
            f"data.split_dev must be a fraction in (0, 1) or a whole number of rows >= 1, got {value}."
        )


def held_out_count(total: int, split_dev: float) -> int:
    """Rows to hold out of ``total``: the fraction rounded, or the count; at least one row stays in each part.

    Raises:
        DataError: Fewer than two rows, or a count that leaves no training row.
    """
    count = round(split_dev * total) if split_dev < 1 else int(split_dev)
    if total < 2 or count >= total:
        raise DataError(
            f"data.split_dev={split_dev} would hold out {count} of {total} training rows and leave none to "
            "train on; use a smaller data.split_dev."
        )
    return max(1, count)


def split_rows(
    total: int, count: int, seed: int, labels: Sequence[Any] | None = None
) -> tuple[list[int], list[int]]:
    """``(train, held_out)`` row indices, each in increasing order; stratified when ``labels`` are given.

    Each class holds out ``count * class_size / total`` rows, the fractions given by largest remainders, so
    the held-out part keeps the class proportions as closely as its size allows. Regression labels (floats)
    are not stratified.
    """
    rng = np.random.default_rng([seed, total, count])
    if labels is None or any(isinstance(v, float) for v in labels[:1]):
        held = rng.permutation(total)[:count]
    else:
        classes: dict[Any, list[int]] = {}
        for i, label in enumerate(labels):
            classes.setdefault(label, []).append(i)
        keys = sorted(classes, key=str)
        exact = [count * len(classes[k]) / total for k in keys]
        share = [math.floor(x) for x in exact]
        for i in sorted(range(len(keys)), key=lambda i: (share[i] - exact[i], str(keys[i])))[
            : count - sum(share)
        ]:
            share[i] += 1
        held = np.concatenate(
            [
                np.asarray(classes[k])[rng.permutation(len(classes[k]))[:n]]
                for k, n in zip(keys, share, strict=True)
            ]
        )
    mask = np.zeros(total, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()


def _keys(ds: Dataset, columns: Sequence[str]) -> list[tuple[str, ...]]:
    values = [ds[c][:] for c in columns]
    return [tuple(" ".join(str(v).split()).lower() for v in row) for row in zip(*values, strict=True)]


def overlap(
    train: Dataset, evals: dict[str, Dataset], columns: Sequence[str], *, drop: bool
) -> tuple[Dataset, dict[str, int], int]:
    """Count evaluation rows whose text (case and spacing aside) is also a training row's.

    Returns:
        ``(train, shared, dropped)``: the training rows (without the shared ones when ``drop``), the number
        of shared rows of each evaluation split, and how many training rows were dropped.
    """
    train_keys = _keys(train, columns)
    seen = set(train_keys)
    shared, everywhere = {}, set()
    for name, ds in evals.items():
        keys = _keys(ds, columns)
        shared[name] = sum(k in seen for k in keys)
        everywhere |= set(keys)
    if not drop:
        return train, shared, 0
    keep = [i for i, k in enumerate(train_keys) if k not in everywhere]
    if not keep:
        raise DataError(
            "data.drop_overlap would drop every training row: the evaluation data repeats them all."
        )
    return (train.select(keep) if len(keep) < len(train) else train), shared, len(train) - len(keep)
