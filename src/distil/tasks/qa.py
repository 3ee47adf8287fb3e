"""Extractive question answering on SQuAD v1.1 (``data.task=squad``) and v2.0 (``data.task=squad_v2``).

Training rows are windowed features with ``labels = [start, end]`` token positions (`distil.data.
squad_features`). Models carry a question-answering head; `distil.adapters.forward_features` returns its
scores as ``Features.logits`` of shape ``[batch, 2, seq]`` (start row, end row), so the shared losses
give the QA objective directly: ``task_loss`` is ``(CE_start + CE_end) / 2`` and ``kd_kl`` is
``(KL_start + KL_end) / 2``, each averaged over the batch. Evaluation decodes n-best spans per question
(`distil.evaluation.squad`) and scores them with the official EM/F1 (`distil.metrics.squad_metrics`).

When only an evaluation file is at hand (SQuAD's training files are not available offline here),
``data.split_dev`` trains on part of its articles and evaluates on the others, split by title (no article
on both sides) and seeded by ``data.split_seed``; ``describe`` records the split. ``data.train_subset``
and ``data.dev_subset`` count questions (before windowing).
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.config import DataConfig
from distil.data.batching import collate
from distil.data.sources import resolve_data_dir, subset
from distil.data.squad import check_answer_spans, read_squad, resolve_squad_file, split_by_title
from distil.data.squad_features import build_features
from distil.evaluation.squad import decode_answers, predict_span_scores
from distil.metrics import squad_metrics

__all__ = ["QATask"]


class QATask:
    """SQuAD questions read and validated at construction, windowed into features by ``prepare``."""

    head = "qa"
    num_labels = 2  # two scores per token: answer start and answer end
    is_regression = False
    main_metric: str | None = "f1"

    def __init__(self, data: DataConfig, seed: int) -> None:
        self.name = data.task
        self.version_2 = data.task == "squad_v2"
        self.settings = data
        data_dir = resolve_data_dir(data.data_dir)
        dev_path = resolve_squad_file(data.task, "dev", data.dev_file, data_dir)
        dev = read_squad(dev_path, version_2=self.version_2)
        self.split: dict[str, Any] = {"dev_file": str(dev_path)}
        if data.split_dev is not None:
            train, dev, summary = split_by_title(dev, data.split_dev, data.split_seed)
            train_path = dev_path
            self.split |= summary | {"split_dev": data.split_dev, "split_seed": data.split_seed}
        else:
            train_path = resolve_squad_file(data.task, "train", data.train_file, data_dir)
            train = read_squad(train_path, version_2=self.version_2)
            self.split |= {"train_file": str(train_path)}
        check_answer_spans(train, train_path)
        self.train_examples = subset(train, data.train_subset, seed)
        self.dev_examples = subset(dev, data.dev_subset, seed)
        self.train_set: Dataset = self.train_examples
        self.dev_set: Dataset | None = self.dev_examples
        self.pad_token_id = 0

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Window both splits into features (the dev features keep offsets for decoding)."""
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        stride = self.settings.doc_stride
        self.train_set = build_features(
            self.train_examples, tokenizer, max_length, stride, keep_offsets=False
        )
        self.dev_set = build_features(self.dev_examples, tokenizer, max_length, stride, keep_offsets=True)

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Dynamic padding; ``labels`` is ``[B, 2]`` (start, end)."""
        return collate(rows, self.pad_token_id)

    def evaluate(self, model: PreTrainedModel, batch_size: int) -> dict[str, float]:
        """Official EM/F1 (percent); SQuAD 2.0 adds the answerable / unanswerable breakdown."""
        if self.dev_set is None:
            return {}
        starts, ends = predict_span_scores(
            model, self.dev_set, batch_size=batch_size, pad_token_id=self.pad_token_id
        )
        s = self.settings
        predictions = decode_answers(
            self.dev_examples,
            self.dev_set,
            starts,
            ends,
            n_best=s.n_best,
            max_answer_length=s.max_answer_length,
            version_2=self.version_2,
            null_threshold=s.null_score_threshold,
        )
        references = dict(zip(self.dev_examples["id"], self.dev_examples["answer_texts"], strict=True))
        metrics = squad_metrics(predictions, references)
        if self.version_2:
            for name, keep in (("has_answer", True), ("no_answer", False)):
                part = {k: v for k, v in references.items() if bool(v) == keep}
                if part:
                    scores = squad_metrics(predictions, part)
                    metrics |= {f"{name}_exact_match": scores["exact_match"], f"{name}_f1": scores["f1"]}
        return metrics

    def describe(self) -> dict[str, Any]:
        """Task, files or split, and question counts (and feature counts once prepared)."""
        out = {"task": self.name, **self.split}
        out |= {"train_examples": len(self.train_examples), "dev_examples": len(self.dev_examples)}
        if self.train_set is not self.train_examples and self.dev_set is not None:
            out |= {"train_features": len(self.train_set), "dev_features": len(self.dev_set)}
        return out
