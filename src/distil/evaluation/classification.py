"""Predictions of a sequence classifier or regressor on a tokenised split, and the task's official metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import collate, length_sorted_batches
from distil.data.spec import TaskSpec
from distil.evaluation.shards import Shard
from distil.metrics import compute_metrics
from distil.progress import Phase

__all__ = ["Logits", "model_logits", "predict", "predictions", "task_metrics"]


_ALONE = Shard()
Logits = Callable[[dict[str, torch.Tensor]], "torch.Tensor | np.ndarray"]


def model_logits(model: PreTrainedModel | nn.Module) -> Logits:
    """A PyTorch model as a function from a collated batch to its logits (on the model's device).

    A module that is not a ``PreTrainedModel`` must carry the model's ``config`` and take its inputs.
    """
    device = next(model.parameters()).device
    family = cast(PreTrainedModel, model)  # model_inputs reads only .config (the family's inputs)

    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in model_inputs(family, batch).items()}).logits

    return logits


@torch.no_grad()
def predict(
    logits_of: Logits,
    dataset: Dataset,
    *,
    batch_size: int,
    pad_token_id: int,
    is_regression: bool,
    shard: Shard = _ALONE,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and references over ``dataset`` (length-sorted batches, returned in row order).

    Args:
        logits_of: Batch -> ``[B, num_labels]`` logits: `model_logits` of a PyTorch model, or an ONNX
            session (`distil.deploy.runtime.OnnxModel`).
        dataset: Tokenised rows with ``labels``.
        batch_size: Rows per batch.
        pad_token_id: The tokenizer's padding id.
        is_regression: One real-valued output.
        shard: This process's share when several processes evaluate together.
    """
    dtype = np.float64 if is_regression else np.int64
    preds, refs = np.zeros(len(dataset), dtype=dtype), np.zeros(len(dataset), dtype=dtype)
    batches = list(length_sorted_batches(dataset, batch_size))
    mine, padding = shard.take(batches)
    done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    todo = [*mine, *batches[:1] * padding]
    phase = Phase(f"evaluating on {len(dataset)} rows", len(todo), enabled=shard.rank == 0)
    for rows in todo:
        batch = collate([dataset[int(i)] for i in rows], pad_token_id)
        logits = torch.as_tensor(logits_of(batch)).float()
        out = logits[:, 0] if is_regression else logits.argmax(-1)
        done.append((rows, out.cpu().numpy(), batch["labels"].numpy()))
        phase.update()
    phase.close()
    for part in shard.gather(done[: len(mine)]):
        for rows, pred, ref in part:
            preds[rows], refs[rows] = pred, ref
    return preds, refs


def task_metrics(task: TaskSpec, preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """The spec's metrics: GLUE's official ones for a GLUE task; accuracy/F1 or Pearson/Spearman else."""
    return compute_metrics(task.metrics, preds, refs)


def predictions(
    model: PreTrainedModel | Logits,
    dataset: Dataset,
    *,
    is_regression: bool,
    batch_size: int,
    pad_token_id: int,
    shard: Shard = _ALONE,
) -> tuple[np.ndarray, np.ndarray]:
    """`predict` for a PyTorch model (in eval mode for the pass) or any batch -> logits function."""
    kwargs: dict[str, Any] = {"batch_size": batch_size, "pad_token_id": pad_token_id, "shard": shard}
    if isinstance(model, nn.Module):  # a model, or a module called like one (TED's filter heads)
        was_training = model.training
        model.eval()
        try:
            return predict(model_logits(model), dataset, is_regression=is_regression, **kwargs)
        finally:
            model.train(was_training)
    return predict(model, dataset, is_regression=is_regression, **kwargs)
