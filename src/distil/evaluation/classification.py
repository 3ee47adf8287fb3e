"""Evaluate a sequence classifier or regressor on a tokenised split with the task's official metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import collate, length_sorted_batches
from distil.data.tasks import GLUE_TASKS, TaskSpec
from distil.metrics import compute_metrics, glue_metrics

__all__ = ["Logits", "evaluate", "model_logits", "predict", "task_metrics"]


Logits = Callable[[dict[str, torch.Tensor]], "torch.Tensor | np.ndarray"]


def model_logits(model: PreTrainedModel) -> Logits:
    """A PyTorch model as a function from a collated batch to its logits (on the model's device)."""
    device = next(model.parameters()).device

    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in model_inputs(model, batch).items()}).logits

    return logits


@torch.no_grad()
def predict(
    logits_of: Logits, dataset: Dataset, *, batch_size: int, pad_token_id: int, is_regression: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and references over ``dataset`` (length-sorted batches, returned in row order).

    Args:
        logits_of: Batch -> ``[B, num_labels]`` logits: `model_logits` of a PyTorch model, or an ONNX
            session (`distil.deploy.runtime.OnnxModel`).
        dataset: Tokenised rows with ``labels``.
        batch_size: Rows per batch.
        pad_token_id: The tokenizer's padding id.
        is_regression: One real-valued output.
    """
    preds = np.zeros(len(dataset), dtype=np.float64 if is_regression else np.int64)
    refs = np.zeros(len(dataset), dtype=np.float64 if is_regression else np.int64)
    for rows in length_sorted_batches(dataset, batch_size):
        batch = collate([dataset[int(i)] for i in rows], pad_token_id)
        logits = torch.as_tensor(logits_of(batch)).float()
        out = logits[:, 0] if is_regression else logits.argmax(-1)
        preds[rows] = out.cpu().numpy()
        refs[rows] = batch["labels"].numpy()
    return preds, refs


def task_metrics(task: TaskSpec, preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """GLUE's official metrics for GLUE tasks; accuracy/F1 or Pearson/Spearman for custom tasks."""
    if task.name in GLUE_TASKS:
        return glue_metrics(task.name, preds, refs)
    return compute_metrics(task.metrics, preds, refs)


def evaluate(
    model: PreTrainedModel | Logits, dataset: Dataset, task: TaskSpec, *, batch_size: int, pad_token_id: int
) -> dict[str, float]:
    """Metrics of ``model`` (a PyTorch model or any batch -> logits function) on ``dataset``."""
    if isinstance(model, PreTrainedModel):
        was_training = model.training
        model.eval()
        try:
            return evaluate(
                model_logits(model), dataset, task, batch_size=batch_size, pad_token_id=pad_token_id
            )
        finally:
            model.train(was_training)
    preds, refs = predict(
        model, dataset, batch_size=batch_size, pad_token_id=pad_token_id, is_regression=task.is_regression
    )
    return task_metrics(task, preds, refs)
