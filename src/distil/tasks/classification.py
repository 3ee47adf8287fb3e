"""Sequence classification and regression: the GLUE tasks and custom labelled files."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.config import DataConfig
from distil.data.batching import collate, tokenize
from distil.data.sources import load_custom, load_glue_split, load_task_file, resolve_data_dir, subset
from distil.data.tasks import TaskSpec, custom_task, get_task
from distil.evaluation.classification import evaluate

__all__ = ["ClassificationTask"]


class ClassificationTask:
    """A labelled task read and validated at construction, tokenised by ``prepare``."""

    head = "seq"

    def __init__(self, data: DataConfig, seed: int) -> None:
        if data.task == "custom":
            assert data.train_file and data.text_columns
            spec = custom_task(
                tuple(data.text_columns),
                data.label_column,
                is_regression=data.is_regression,
                label_names=tuple(data.label_names) if data.label_names else None,
                train_file=data.train_file,
            )
            train = load_custom(data.train_file, spec)
            dev = load_custom(data.dev_file, spec) if data.dev_file else None
        else:
            spec = get_task(data.task)
            data_dir = resolve_data_dir(data.data_dir)
            # A file given for a GLUE task (an augmented transfer set, say) has the task's own columns.
            if data.train_file:
                train = load_task_file(data.train_file, spec)
            else:
                train = load_glue_split(spec, "train", data_dir)
            if data.dev_file:
                dev = load_task_file(data.dev_file, spec)
            else:
                dev = load_glue_split(spec, spec.dev_splits[0], data_dir)
        self.spec: TaskSpec = spec
        self.name = spec.name
        self.num_labels = spec.num_labels
        self.is_regression = spec.is_regression
        self.main_metric: str | None = spec.main_metric
        self._raw_train = subset(train, data.train_subset, seed)
        self._raw_dev = subset(dev, data.dev_subset, seed) if dev is not None else None
        self.train_set: Dataset = self._raw_train
        self.dev_set: Dataset | None = self._raw_dev
        self.pad_token_id = 0

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise both splits without padding."""
        self.pad_token_id = int(tokenizer.pad_token_id or 0)
        self.train_set = tokenize(self._raw_train, tokenizer, self.spec, max_length)
        if self._raw_dev is not None:
            self.dev_set = tokenize(self._raw_dev, tokenizer, self.spec, max_length)

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Dynamic padding to the longest row."""
        return collate(rows, self.pad_token_id)

    def evaluate(self, model: PreTrainedModel, batch_size: int) -> dict[str, float]:
        """The task's official metrics on the dev split."""
        if self.dev_set is None:
            return {}
        return evaluate(model, self.dev_set, self.spec, batch_size=batch_size, pad_token_id=self.pad_token_id)

    def describe(self) -> dict[str, Any]:
        """Task name and split sizes."""
        return {
            "task": self.name,
            "train_examples": len(self.train_set),
            "dev_examples": len(self.dev_set) if self.dev_set is not None else 0,
        }
