"""What the loop needs from a task: data to train on, how to batch it, how to score a model."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TaskData"]


@runtime_checkable
class TaskData(Protocol):
    """A task's data and evaluation, independent of the method.

    Attributes:
        name: Task name (``sst2``, ``custom``, ``corpus``, ...).
        head: Model head the task's models carry by default: ``seq`` (sequence classification or
            regression), ``base`` (no head), ``mlm`` or ``lm``.
        num_labels: Classes (1 for regression, 0 when there are no labels).
        is_regression: Labels are real numbers.
        main_metric: Metric that selects the best checkpoint, or ``None`` when there is no evaluation.
        train_set: Tokenised training rows (after ``prepare``), each with an ``idx`` column.
        dev_set: Tokenised evaluation rows, or ``None``.
    """

    name: str
    head: str
    num_labels: int
    is_regression: bool
    main_metric: str | None
    train_set: Dataset
    dev_set: Dataset | None

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise the raw data (called once the models and their tokenizer are known)."""
        ...

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Turn rows of ``train_set`` into a padded batch."""
        ...

    def evaluate(self, model: PreTrainedModel, batch_size: int) -> dict[str, float]:
        """Metrics of ``model`` on ``dev_set`` (empty when there is none)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A short, JSON-able summary for the recipe file."""
        ...
