"""Classification and regression metrics computed locally (no hub downloads), with scikit-learn and SciPy.

Values are fractions in [0, 1] (correlations in [-1, 1]), as Hugging Face ``evaluate`` reports them.
SQuAD's EM/F1 live with the SQuAD task (`distil.tasks.squad.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from distil.errors import ConfigError, closest

__all__ = [
    "GLUE_METRIC_KEYS",
    "METRICS",
    "canonical_task_name",
    "compute_metrics",
    "glue_metrics",
]

#: The metric keys GLUE reports for each task.
GLUE_METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}

# Names people use for the same task: GLUE folder names, the MNLI dev halves, hyphenated forms.
_ALIASES: dict[str, str] = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "mnli_matched": "mnli",
    "mnli_mismatched": "mnli",
    "mnli-m": "mnli",
    "mnli-mm": "mnli",
}


# scikit-learn and SciPy are imported on first use: importing them costs seconds, and the task table
# (imported by every CLI command) only needs the metric names.


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(references, predictions))


def _f1(predictions: np.ndarray, references: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0))


def _mcc(predictions: np.ndarray, references: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(references, predictions))


def _correlation(name: str, predictions: np.ndarray, references: np.ndarray) -> float:
    from scipy import stats

    # A constant input makes the correlation undefined; report 0 (as scikit-learn does for MCC) rather
    # than NaN, so a degenerate early checkpoint never wins best-checkpoint selection by accident.
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return float(getattr(stats, name)(predictions, references).statistic)


#: Metric key -> function of (predictions, references) arrays.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _mcc,
    "pearson": lambda p, r: _correlation("pearsonr", p, r),
    "spearmanr": lambda p, r: _correlation("spearmanr", p, r),
}

_REGRESSION_KEYS = frozenset({"pearson", "spearmanr"})


def canonical_task_name(task: str) -> str:
    """Map a GLUE task name or alias (``SST-2``, ``mnli-mm``, ``mnli_matched``) to its table key.

    Args:
        task: A task name, case-insensitive.

    Returns:
        The key in ``GLUE_METRIC_KEYS``.

    Raises:
        ConfigError: ``task`` is not a GLUE task; the message lists the tasks and a close match.
    """
    key = task.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_METRIC_KEYS:
        valid = ", ".join(GLUE_METRIC_KEYS)
        raise ConfigError(
            f"Unknown GLUE task {task!r}; valid tasks: {valid}.{closest(key, GLUE_METRIC_KEYS)}"
        )
    return key


def _as_array(values: Any, regression: bool) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if array.ndim == 2 and not regression:
        # Class scores of shape (N, C): the prediction is the arg-max class.
        array = array.argmax(axis=-1)
    return array.reshape(-1).astype(np.float64 if regression else np.int64)


def compute_metrics(keys: Sequence[str], predictions: Any, references: Any) -> dict[str, float]:
    """Compute the named metrics.

    Args:
        keys: Metric keys from ``METRICS`` (for example a ``TaskSpec.metrics`` tuple).
        predictions: Class ids ``(N,)`` or class scores ``(N, C)`` (arg-max is taken); floats ``(N,)`` or
            ``(N, 1)`` for correlations. Lists, NumPy arrays and tensors are accepted.
        references: Gold class ids or floats, shape ``(N,)``.

    Returns:
        A dict from each key to its value as a Python float.

    Raises:
        ConfigError: A key is unknown.
        ValueError: The inputs are empty or their lengths differ.
    """
    for key in keys:
        if key not in METRICS:
            raise ConfigError(
                f"Unknown metric {key!r}; valid metrics: {', '.join(METRICS)}.{closest(key, METRICS)}"
            )
    regression = bool(_REGRESSION_KEYS.intersection(keys))
    preds, refs = _as_array(predictions, regression), _as_array(references, regression)
    if preds.shape != refs.shape or preds.size == 0:
        raise ValueError(f"Need as many predictions as references (> 0); got {preds.size} and {refs.size}.")
    return {key: METRICS[key](preds, refs) for key in keys}


def glue_metrics(task: str, predictions: Any, references: Any) -> dict[str, float]:
    """Compute the metrics GLUE reports for ``task``.

    ``cola`` gives ``matthews_correlation``; ``sst2``, ``qnli``, ``rte``, ``wnli`` and ``mnli`` (also
    ``mnli_matched``, ``mnli_mismatched``, ``mnli-mm``) give ``accuracy``; ``mrpc`` and ``qqp`` give
    ``accuracy`` and ``f1`` (positive class 1); ``stsb`` gives ``pearson`` and ``spearmanr``.

    Args:
        task: GLUE task name or alias.
        predictions: Class ids ``(N,)`` (or scores ``(N, C)``), or floats ``(N,)`` for ``stsb``.
        references: Gold labels ``(N,)``.

    Returns:
        A dict from metric key to value.

    Raises:
        ConfigError: ``task`` is unknown (with a did-you-mean hint).
    """
    return compute_metrics(GLUE_METRIC_KEYS[canonical_task_name(task)], predictions, references)
