"""Evaluate a sequence classifier or regressor on a tokenised split with the task's official metrics."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import collate
from distil.data.tasks import GLUE_TASKS, TaskSpec
from distil.metrics import compute_metrics, glue_metrics

__all__ = ["evaluate", "predict", "task_metrics"]


@torch.no_grad()
def predict(
    model: PreTrainedModel, dataset: Dataset, *, batch_size: int, pad_token_id: int, is_regression: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and references over ``dataset`` (sorted by length for speed, returned in row order)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in dataset["input_ids"][:]], kind="stable")
    preds = np.zeros(len(dataset), dtype=np.float64 if is_regression else np.int64)
    refs = np.zeros(len(dataset), dtype=np.float64 if is_regression else np.int64)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate([dataset[int(i)] for i in rows], pad_token_id)
        logits = model(**{k: v.to(device) for k, v in model_inputs(model, batch).items()}).logits.float()
        out = logits.squeeze(-1) if is_regression else logits.argmax(-1)
        preds[rows] = out.cpu().numpy()
        refs[rows] = batch["labels"].numpy()
    model.train(was_training)
    return preds, refs


def task_metrics(task: TaskSpec, preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """GLUE's official metrics for GLUE tasks; accuracy/F1 or Pearson/Spearman for custom tasks."""
    if task.name in GLUE_TASKS:
        return glue_metrics(task.name, preds, refs)
    return compute_metrics(task.metrics, preds, refs)


def evaluate(
    model: PreTrainedModel, dataset: Dataset, task: TaskSpec, *, batch_size: int, pad_token_id: int
) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset``."""
    preds, refs = predict(
        model, dataset, batch_size=batch_size, pad_token_id=pad_token_id, is_regression=task.is_regression
    )
    return task_metrics(task, preds, refs)
