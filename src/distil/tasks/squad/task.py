"""Extractive question answering on SQuAD v1.1 (``data.task=squad``) and v2.0 (``data.task=squad_v2``).

Training rows are windowed features with ``labels = [start, end]`` token positions (`distil.data.
squad_features`). Models carry a question-answering head; `distil.adapters.forward_features` returns its
scores as ``Features.logits`` of shape ``[batch, 2, seq]`` (start row, end row), so the shared losses
give the QA objective directly: ``task_loss`` is ``(CE_start + CE_end) / 2`` and ``kd_kl`` is
``(KL_start + KL_end) / 2``, each averaged over the batch. Evaluation decodes n-best spans per question
(`distil.tasks.squad.decode`) and scores them with the official EM/F1 (`distil.metrics.squad_metrics`).

When only an evaluation file is at hand (SQuAD's training files are not available offline here),
``data.split_dev`` trains on part of its articles and evaluates on the others, split by title (no article
on both sides) and seeded by ``data.split_seed``; ``describe`` records the split. ``data.train_subset``
and ``data.dev_subset`` count questions (before windowing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.data.batching import collate
from distil.data.readers import resolve_data_dir, subset
from distil.errors import ConfigError
from distil.evaluation.shards import Shard
from distil.tasks.base import DataCommon, TaskFlags
from distil.tasks.squad.decode import decode_answers, predict_span_scores
from distil.tasks.squad.features import build_features
from distil.tasks.squad.metrics import squad_metrics
from distil.tasks.squad.reader import check_answer_spans, read_squad, resolve_squad_file, split_by_title
from distil.types import Batch

__all__ = ["SquadData", "SquadTask"]


@dataclass
class SquadData(DataCommon):
    """The data section of extractive QA (``data.task=squad`` for v1.1, ``squad_v2`` for v2.0).

    Attributes:
        max_length: Tokens per window (question and context); HF's ``--max_seq_length`` 384.
        data_dir: Folder holding ``squad/v1.1/*.json`` (``squad/v2.0`` for v2); else ``$DISTIL_DATA``,
            else ``../shared/data``.
        train_file: Training JSON (official SQuAD layout); default ``squad/v1.1/train-v1.1.json`` under
            the data folder. Paths not found from the working directory are looked up there.
        dev_file: Evaluation JSON; default ``squad/v1.1/dev-v1.1.json`` under the data folder.
        train_subset: Train on a seeded random subset of this many questions (before windowing).
        dev_subset: Evaluate on a seeded random subset of this many questions.
        group_by_length: Batch windows of similar length together.
        doc_stride: Tokens shared by consecutive windows of a context longer than ``max_length``
            (HF's ``--doc_stride``; must be below ``max_length / 2``).
        max_answer_length: Longest predicted answer, in tokens.
        n_best: Start and end candidates (each) considered per window when predicting.
        null_score_threshold: For ``squad_v2``: predict "no answer" when the no-answer score beats the best
            span's score by more than this (HF's ``null_score_diff_threshold``).
        split_dev: Hold out this fraction of the articles (``0 < v < 1``), or whole articles until at least
            this many questions (``v >= 1``), by title so that no article is on both sides, as the dev split:
            from ``train_file`` when one is given (``dev_file`` is then not scored), else from ``dev_file``
            (train on the rest of it).
        split_seed: Seed of the ``split_dev`` article split (fixed apart from ``train.seed``, so runs with
            different training seeds are scored on the same held-out articles).
    """

    task: str = "squad"
    max_length: int = 384
    data_dir: str | None = None
    train_file: str | None = None
    dev_file: str | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    null_score_threshold: float = 0.0
    split_dev: float | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("doc_stride", "max_answer_length", "n_best"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}.")
        if 2 * self.doc_stride >= self.max_length:
            raise ConfigError(
                f"data.doc_stride={self.doc_stride} must be below data.max_length / 2 "
                f"({self.max_length} / 2): it is the overlap of two windows of one context. SQuAD runs "
                "usually set data.max_length=384 (with the default data.doc_stride=128)."
            )
        if not math.isfinite(self.null_score_threshold):
            raise ConfigError(f"data.null_score_threshold must be finite, got {self.null_score_threshold}.")

    def metric_names(self) -> tuple[str, ...]:
        """Official EM/F1 (v2.0 adds the answerable / unanswerable breakdown)."""
        keys: tuple[str, ...] = ("exact_match", "f1")
        if self.task == "squad_v2":
            keys += tuple(f"{part}_{k}" for part in ("has_answer", "no_answer") for k in keys)
        return keys


class SquadTask:
    """Extractive QA on SQuAD v1.1 / v2.0 JSON files (questions windowed into features); EM and F1."""

    kind: ClassVar[str] = "squad"
    names: ClassVar[tuple[str, ...]] = ("squad", "squad_v2")
    Config: ClassVar[type[SquadData]] = SquadData
    head: ClassVar[str] = "qa"
    labelled: ClassVar[bool] = True
    cacheable_teacher: ClassVar[bool] = False  # per-token start/end scores of every window
    cache_root: Path | None = None  # nothing derived from the data is kept

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """The data-section fields of the command-line task options (`distil.tasks.base.TaskFlags`)."""
        return {"data_dir": flags.data_dir, "dev_file": flags.file}

    num_labels = 2  # two scores per token: answer start and answer end
    is_regression = False
    main_metric: str | None = "f1"

    def __init__(self, data: SquadData, seed: int, *, eval_only: bool = False) -> None:
        self.name = data.task
        self.version_2 = data.task == "squad_v2"
        self.settings = data
        data_dir = resolve_data_dir(data.data_dir)
        dev_path = resolve_squad_file(data.task, "dev", data.dev_file, data_dir)
        dev = read_squad(dev_path, version_2=self.version_2)
        self.split: dict[str, Any] = {"dev_file": str(dev_path)}
        if eval_only:
            train = dev.select([])
            train_path = dev_path
        elif data.split_dev is not None:
            source = dev
            train_path = dev_path
            if data.train_file:  # the dev split comes out of the training file; dev_file is not scored
                train_path = resolve_squad_file(data.task, "train", data.train_file, data_dir)
                source = read_squad(train_path, version_2=self.version_2)
                self.split = {"train_file": str(train_path)}
            train, dev, summary = split_by_title(source, data.split_dev, data.split_seed)
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
        self.group_by_length = data.group_by_length
        self.pad_token_id = 0
        self.notes: list[str] = []

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Window both splits into features (the dev features keep offsets for decoding)."""
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        stride = self.settings.doc_stride
        self.train_set = build_features(
            self.train_examples, tokenizer, max_length, stride, keep_offsets=False
        )
        self.dev_set = build_features(self.dev_examples, tokenizer, max_length, stride, keep_offsets=True)

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Dynamic padding; ``labels`` is ``[B, 2]`` (start, end)."""
        return Batch.from_mapping(collate(rows, self.pad_token_id))

    def evaluate(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """Official EM/F1 (percent); SQuAD 2.0 adds the answerable / unanswerable breakdown."""
        if self.dev_set is None:
            return {}
        predictions, references = self.answers(model, batch_size, shard)
        metrics = squad_metrics(predictions, references)
        if self.version_2:
            for name, keep in (("has_answer", True), ("no_answer", False)):
                part = {k: v for k, v in references.items() if bool(v) == keep}
                if part:
                    scores = squad_metrics(predictions, part)
                    metrics |= {f"{name}_exact_match": scores["exact_match"], f"{name}_f1": scores["f1"]}
        return metrics

    def answers(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The decoded answer of every dev question, and its reference answers, by question id."""
        assert self.dev_set is not None
        starts, ends = predict_span_scores(
            model, self.dev_set, batch_size=batch_size, pad_token_id=self.pad_token_id, shard=shard or Shard()
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
        return predictions, references

    def describe(self) -> dict[str, Any]:
        """Task, files or split, and question counts (and feature counts once prepared)."""
        hub = "rajpurkar/squad_v2" if self.version_2 else "rajpurkar/squad"
        out = {"task": self.name, "hub_datasets": [hub], **self.split}
        out |= {"train_examples": len(self.train_examples), "dev_examples": len(self.dev_examples)}
        if self.train_set is not self.train_examples and self.dev_set is not None:
            out |= {"train_features": len(self.train_set), "dev_features": len(self.dev_set)}
        return out

    def check_model(self, config: Any, what: str) -> None:
        """Any family with a question-answering head can train extractive QA."""
        return None
