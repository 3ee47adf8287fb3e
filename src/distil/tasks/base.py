"""What the loop needs from a task, and the data-section fields every task kind shares.

A task *kind* (GLUE, custom files, SQuAD, corpus, causal LM) is one module of this package holding its
data config (the ``data:`` section, only that kind's fields), its loading, collate and evaluation. The
registry ``distil.tasks.TASKS`` maps kinds to their ``Task`` classes; ``data.task`` names a task of a kind
(``sst2`` is a GLUE task).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.data.batching import row_lengths
from distil.data.splits import check_split_dev
from distil.errors import ConfigError
from distil.evaluation.shards import Shard
from distil.types import Batch

__all__ = ["DataCommon", "Task", "TaskFlags", "row_lengths"]


@dataclass(frozen=True)
class TaskFlags:
    """The task options of ``distil eval``, ``bench`` and ``augment``.

    Each task kind maps them to its data section (`Task.data_from_flags`).

    Attributes:
        file: ``--file``: the evaluation (or training) file.
        data_dir: ``--data-dir``: the folder of the GLUE / SQuAD files.
        text_columns: ``--text-columns``, split at commas (custom files).
        label_column: ``--label-column`` (custom files).
        regression: ``--regression`` (custom files).
        header: Not ``--no-header`` (custom CSV/TSV files).
    """

    file: str | None = None
    data_dir: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str = "label"
    regression: bool = False
    header: bool = True


@dataclass
class DataCommon:
    """Fields of every task kind's data section.

    Attributes:
        task: The task: a GLUE name (``sst2``, ``mnli``, ...), ``custom``, ``squad``/``squad_v2``,
            ``corpus`` or ``lm``; it selects the kind and so the other fields that apply.
        max_length: Truncation (or block) length in tokens.
        split_dev: Hold out this fraction (``0 < v < 1``) or number (``v >= 1``) of the training rows as the
            dev split that evaluation and model selection use (stratified by label for classification);
            a dev file, if any, is then scored as ``test`` (metrics suffixed ``_test``).
        split_seed: Seed of ``split_dev`` (apart from ``train.seed``, so runs with different training seeds
            are scored on the same rows).
    """

    task: str = "sst2"
    max_length: int = 128
    split_dev: float | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8, got {self.max_length}.")
        check_split_dev(self.split_dev)

    def regression(self) -> bool:
        """The task predicts one real number per example."""
        return False

    def metric_names(self) -> tuple[str, ...]:
        """Every metric key the task's evaluation reports (empty: no evaluation)."""
        return ()


@runtime_checkable
class Task(Protocol):
    """A task's data and evaluation, independent of the method.

    Class attributes:
        kind: Registry kind (``glue``, ``custom``, ``squad``, ``corpus``, ``lm``).
        names: The ``data.task`` values of this kind.
        Config: The data section of this kind.
        head: Model head the task's models carry: ``seq`` (sequence classification or regression),
            ``qa`` (extractive QA), ``lm`` (causal LM) or ``base`` (no head: a corpus).
        labelled: The training rows have labels.
        cacheable_teacher: The teacher's outputs per example are small enough to keep (class logits).

    Attributes:
        name: Task name (``sst2``, ``custom``, ``corpus``, ...).
        num_labels: Classes (1 for regression, 0 when there are no labels).
        is_regression: Labels are real numbers.
        main_metric: Metric that selects the best checkpoint, or ``None`` when there is no evaluation.
        group_by_length: Batch rows of similar length together.
        train_set: Tokenised training rows (after ``prepare``), each with an ``idx`` column.
        dev_set: Tokenised evaluation rows, or ``None``.
        notes: What loading found that the user should hear (texts shared by training and evaluation
            data, rows dropped); printed once and recorded in the recipe.
    """

    kind: ClassVar[str]
    names: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[Any]]
    head: ClassVar[str]
    labelled: ClassVar[bool]
    cacheable_teacher: ClassVar[bool]

    name: str
    num_labels: int
    is_regression: bool
    main_metric: str | None
    group_by_length: bool
    train_set: Dataset
    notes: list[str]
    cache_root: Path | None

    @property
    def dev_set(self) -> Dataset | None:
        """Tokenised evaluation rows (the main split), or ``None``."""
        ...

    def __init__(self, data: Any, seed: int, *, eval_only: bool = False) -> None:
        """Read and validate the raw data; ``eval_only`` reads only the evaluation split (``distil eval``)."""
        ...

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise the raw data (called once the models and their tokenizer are known)."""
        ...

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Turn rows of ``train_set`` into a padded batch."""
        ...

    def evaluate(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``dev_set`` (empty when there is none); ``shard``: this process's share."""
        ...

    def describe(self) -> dict[str, Any]:
        """A short, JSON-able summary for the recipe file.

        It holds ``hub_datasets``: the Hub ids of the datasets the task's data are (a model card's
        ``datasets``; ``[]`` for local files).
        """
        ...

    def check_model(self, config: Any, what: str) -> None:
        """Reject a model the task cannot train (e.g. an encoder for causal LM); called before training."""
        return None

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """The data-section fields the command-line task options give (``task`` and sizes aside).

        Raises:
            ConfigError: An option the kind needs is missing, or the kind has no evaluation.
        """
        ...
