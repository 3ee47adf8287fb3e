"""Per-item test results of a trained model, kept beside the grid so a resumed compare scores nothing twice.

Classification and regression keep each test row's prediction and reference (the metric is recomputed on
every bootstrap resample); extractive QA keeps each question's F1 (and exact match), whose mean is the
metric. A result records the recipe of the model it scored: a run redone since is scored again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.models.loading import load_model, load_tokenizer
from distil.tasks.classification import ClassificationTask
from distil.tasks.squad.metrics import question_scores
from distil.tasks.squad.task import SquadTask

__all__ = ["ItemScores", "check_scorable", "score_model", "test_split"]


@dataclass(frozen=True)
class ItemScores:
    """One model's results on the test items.

    Attributes:
        metric: The batched metric (`distil.evaluation.intervals.BATCHED_METRICS`) that scores them.
        name: The task's name of that metric (``accuracy``, ``f1``, ``matthews_correlation``, ...).
        preds: Predictions (or per-item scores for ``mean``), one per test item.
        refs: References, one per test item (zeros for ``mean``).
    """

    metric: str
    name: str
    preds: np.ndarray
    refs: np.ndarray


def check_scorable(task: Any) -> None:
    """Refuse tasks whose test results are not per-item predictions compare can resample."""
    if not isinstance(task, ClassificationTask | SquadTask):
        raise ConfigError(
            f"distil compare scores labelled tasks (GLUE, custom classification or regression, SQuAD); "
            f"data.task={task.name} has no per-item test metric. Compare such runs with `distil report`."
        )


def test_split(task: Any) -> str:
    """The split compare scores: ``test`` when the data holds one apart from model selection, else ``dev``."""
    splits = getattr(task, "dev_sets", None) or {"dev": None}
    return "test" if "test" in splits else "dev"


def _fingerprint(model_dir: Path) -> str:
    recipe = model_dir / "recipe.json"
    source = recipe if recipe.is_file() else model_dir / "config.json"
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def score_model(
    task: Any, model_dir: Path, cache: Path, *, max_length: int, batch_size: int = 64
) -> ItemScores:
    """The test results of the model in ``model_dir``, read from ``cache`` when it scored this model.

    Args:
        task: The loaded task (`check_scorable`), tokenised here for the model's tokenizer.
        model_dir: A saved model (a run's ``student/``).
        cache: The JSON file keeping the results.
        max_length: Truncation length, as in training.
        batch_size: Evaluation batch size.
    """
    fingerprint = _fingerprint(model_dir)
    if cache.is_file():
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if kept.get("fingerprint") == fingerprint:
            return ItemScores(
                kept["metric"], kept["name"], np.asarray(kept["preds"]), np.asarray(kept["refs"])
            )
    task.prepare(load_tokenizer(str(model_dir)), max_length)
    if isinstance(task, SquadTask):
        model = load_model(str(model_dir), head="qa").eval()
        predictions, references = task.answers(model, batch_size)
        _, f1 = question_scores(predictions, references)
        scores = ItemScores("mean", "f1", f1, np.zeros_like(f1))
    else:
        num_labels = task.num_labels if not task.is_regression else 1
        model = load_model(
            str(model_dir), head="seq", num_labels=num_labels, is_regression=task.is_regression
        ).eval()
        preds, refs = task.predictions(model, batch_size)[test_split(task)]
        assert task.main_metric is not None
        scores = ItemScores(task.main_metric, task.main_metric, np.asarray(preds), np.asarray(refs))
    record = {
        "fingerprint": fingerprint,
        "model": str(model_dir),
        "metric": scores.metric,
        "name": scores.name,
    }
    record |= {"preds": scores.preds.tolist(), "refs": scores.refs.tolist()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(record))
    return scores
