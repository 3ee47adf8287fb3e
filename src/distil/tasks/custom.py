"""Custom labelled tasks (``data.task=custom``): the user's own CSV, TSV or JSON Lines files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distil.data.sources import infer_label_names, load_custom
from distil.data.tasks import custom_task
from distil.errors import ConfigError
from distil.tasks.base import DataCommon
from distil.tasks.classification import ClassificationTask

__all__ = ["CustomData", "CustomTask"]


@dataclass
class CustomData(DataCommon):
    """The data section of a custom task.

    Attributes:
        train_file: Training file (.csv, .tsv or .jsonl).
        dev_file: Evaluation file, same columns.
        text_columns: Text column(s): one, or two for sentence pairs.
        label_column: Label column.
        is_regression: Labels are real numbers.
        label_names: Label values in id order (default: sorted distinct training labels).
        train_subset: Use a seeded random subset of this many training rows (``None``: all).
        dev_subset: Evaluate on a seeded random subset of this many dev rows (``None``: all).
        group_by_length: Batch examples of similar length together (less padding, same randomness).
    """

    task: str = "custom"
    train_file: str | None = None
    dev_file: str | None = None
    text_columns: list[str] | None = None
    label_column: str = "label"
    is_regression: bool = False
    label_names: list[str] | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.train_file and self.text_columns):
            raise ConfigError("data.task=custom needs data.train_file and data.text_columns.")
        if not 1 <= len(self.text_columns) <= 2:
            raise ConfigError("data.text_columns must name one column or a pair of columns.")
        if self.is_regression and self.label_names:
            raise ConfigError("data.label_names must be empty when data.is_regression is true.")

    def regression(self) -> bool:
        """``data.is_regression``."""
        return self.is_regression

    def metric_names(self) -> tuple[str, ...]:
        """Pearson/Spearman for regression; accuracy (and F1 with two classes) for classification."""
        return ("pearson", "spearmanr") if self.is_regression else ("accuracy", "f1")


class CustomTask(ClassificationTask):
    """Your own labelled .csv/.tsv/.jsonl files: classification or regression."""

    kind: ClassVar[str] = "custom"
    names: ClassVar[tuple[str, ...]] = ("custom",)
    Config: ClassVar[type[CustomData]] = CustomData

    def __init__(self, data: CustomData, seed: int, *, eval_only: bool = False) -> None:
        assert data.train_file and data.text_columns
        names = data.label_names
        if not data.is_regression and not names:
            names = list(infer_label_names(data.train_file, data.label_column))
        spec = custom_task(
            tuple(data.text_columns), data.label_column, is_regression=data.is_regression, label_names=names
        )
        train = None if eval_only else load_custom(data.train_file, spec)
        devs = {"dev": load_custom(data.dev_file, spec)} if data.dev_file else {}
        self._init_splits(spec, train, devs, data, seed)
