"""Sequence classification and regression, shared by the GLUE and custom task kinds.

Each kind reads its own files into raw splits (text columns plus ``label`` ids or floats); this class
tokenises them, pads batches and scores a model with the task's metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.data.batching import collate, tokenize
from distil.data.readers import subset
from distil.data.spec import TaskSpec
from distil.data.splits import held_out_count, overlap, split_rows
from distil.errors import ConfigError
from distil.evaluation.classification import Logits, predictions, task_metrics
from distil.evaluation.shards import Shard
from distil.types import Batch

__all__ = ["ClassificationTask"]


class ClassificationTask:
    """A labelled task whose raw splits are read by a kind's ``__init__``; tokenised by ``prepare``.

    Attributes:
        spec: The task's spec (text columns, labels, metrics).
        dev_sets: Evaluation splits by name; the first is the main one (MNLI adds ``mismatched``).
    """

    head: ClassVar[str] = "seq"
    labelled: ClassVar[bool] = True
    cacheable_teacher: ClassVar[bool] = True
    cache_root: Path | None = None  # nothing derived from the data is kept
    hub_datasets: ClassVar[tuple[str, ...]] = ()  # the Hub datasets its data are (a card's ``datasets``)

    def _init_splits(
        self, spec: TaskSpec, train: Dataset | None, devs: dict[str, Dataset], data: Any, seed: int
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.num_labels = spec.num_labels
        self.is_regression = spec.is_regression
        self.main_metric: str | None = spec.main_metric
        self.group_by_length = bool(data.group_by_length)
        self.notes: list[str] = []
        self.split: dict[str, Any] = {}
        if train is not None and data.split_dev is not None:
            train, devs = self._carve_dev(train, devs, data)
        empty = Dataset.from_dict({c: [] for c in (*spec.text_columns, "label")})
        self._raw_train = subset(train, data.train_subset, seed) if train is not None else empty
        self._raw_devs = {name: subset(dev, data.dev_subset, seed) for name, dev in devs.items()}
        if train is not None and self._raw_devs:
            self._raw_train = self._check_overlap(self._raw_train, bool(data.drop_overlap))
        self.train_set: Dataset = self._raw_train
        self.dev_sets: dict[str, Dataset] = dict(self._raw_devs)
        self.pad_token_id = 0

    def _carve_dev(
        self, train: Dataset, devs: dict[str, Dataset], data: Any
    ) -> tuple[Dataset, dict[str, Dataset]]:
        """Hold ``data.split_dev`` of the training rows out as ``dev``; dev files become ``test`` splits."""
        count = held_out_count(len(train), data.split_dev)
        labels = None if self.is_regression else train["label"][:]
        keep, held = split_rows(len(train), count, data.split_seed, labels)
        tests = {("test" if name == "dev" else f"test_{name}"): ds for name, ds in devs.items()}
        self.split = {
            "split_dev": data.split_dev,
            "split_seed": data.split_seed,
            "held_out_rows": len(held),
            "stratified": labels is not None,
            "test_splits": sorted(tests),
        }
        return train.select(keep), {"dev": train.select(held), **tests}

    def _check_overlap(self, train: Dataset, drop: bool) -> Dataset:
        train, shared, dropped = overlap(train, self._raw_devs, self.spec.text_columns, drop=drop)
        for name, count in shared.items():
            if count:
                total = len(self._raw_devs[name])
                self.notes.append(
                    f"{count} of {total} {name} texts also appear in the training data"
                    + ("" if drop else " (data.drop_overlap=true drops them from training)")
                )
        if dropped:
            self.notes.append(f"dropped {dropped} training rows whose text is in the evaluation data")
        self.split |= {"shared_with_train": shared, "dropped_from_train": dropped}
        return train

    @property
    def raw_train(self) -> Dataset:
        """The training rows before tokenisation (text columns and ``label``)."""
        return self._raw_train

    @property
    def dev_set(self) -> Dataset | None:
        """The main evaluation split, or ``None``."""
        return next(iter(self.dev_sets.values()), None)

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise every split without padding."""
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self.train_set = tokenize(self._raw_train, tokenizer, self.spec, max_length)
        self.dev_sets = {k: tokenize(v, tokenizer, self.spec, max_length) for k, v in self._raw_devs.items()}

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Dynamic padding to the longest row."""
        return Batch.from_mapping(collate(rows, self.pad_token_id))

    def evaluate(
        self, model: PreTrainedModel | Logits, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """The task's official metrics on every dev split; splits after the first get their name as suffix."""
        return self.metrics_of(self.predictions(model, batch_size, shard))

    def predictions(
        self, model: PreTrainedModel | Logits, batch_size: int, shard: Shard | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Predictions and references of every dev split, in row order."""
        kwargs: dict[str, Any] = {"batch_size": batch_size, "pad_token_id": self.pad_token_id}
        kwargs |= {"shard": shard} if shard is not None else {}
        return {
            split: predictions(model, data, is_regression=self.spec.is_regression, **kwargs)
            for split, data in self.dev_sets.items()
        }

    def metrics_of(self, by_split: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        """The official metrics of `predictions`; splits after the first get their name as suffix."""
        metrics: dict[str, float] = {}
        for i, (split, (preds, refs)) in enumerate(by_split.items()):
            scores = task_metrics(self.spec, preds, refs)
            metrics |= scores if i == 0 else {f"{k}_{split}": v for k, v in scores.items()}
        return metrics

    def describe(self) -> dict[str, Any]:
        """Task name, split sizes, class names and how the splits were made."""
        return {
            "task": self.name,
            "hub_datasets": list(self.hub_datasets),
            "train_examples": len(self.train_set),
            "dev_examples": len(self.dev_set) if self.dev_set is not None else 0,
            "eval_splits": {name: len(ds) for name, ds in self.dev_sets.items()},
            "label_names": list(self.spec.label_names) if self.spec.label_names else None,
            **({"split": self.split} if self.split else {}),
        }

    def check_model(self, config: Any, what: str) -> None:
        """Any family with a sequence-classification head can train a classification task."""
        return None

    def use_split(self, split: str) -> None:
        """Evaluate on another split of the task (``--split``); GLUE tasks have named splits."""
        raise ConfigError(f"--split applies to GLUE tasks; data.task={self.name} is scored on its dev file.")
