"""Custom labelled tasks (``data.task=custom``): the user's own CSV, TSV or JSON Lines files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from distil.data.readers import resolve_columns
from distil.data.spec import custom_task
from distil.errors import ConfigError
from distil.tasks.base import DataCommon, TaskFlags
from distil.tasks.classification import ClassificationTask
from distil.tasks.custom.reader import infer_label_names, load_custom

__all__ = ["CustomData", "CustomTask"]


@dataclass
class CustomData(DataCommon):
    """The data section of a custom task.

    Attributes:
        train_file: Training file: .csv, .tsv, .jsonl (JSON Lines) or .parquet.
        dev_file: Evaluation file, same columns.
        header: CSV/TSV: the first line names the columns. ``false``: the file has no header line and its
            columns are named by position (0 = the first), e.g. ``text_columns: [0]``, ``label_column: 1``.
        text_columns: Text column(s), by name or position: one, or two for sentence pairs.
        label_column: Label column, by name or position.
        is_regression: Labels are real numbers.
        label_names: Label values in id order (default: sorted distinct training labels). They become the
            exported model's ``id2label``.
        train_subset: Use a seeded random subset of this many training rows (``None``: all).
        dev_subset: Evaluate on a seeded random subset of this many dev rows (``None``: all).
        group_by_length: Batch examples of similar length together (less padding, same randomness).
        drop_overlap: Drop training rows whose text is also an evaluation row's (they are counted and
            reported either way).
    """

    task: str = "custom"
    train_file: str | None = None
    dev_file: str | None = None
    header: bool = True
    text_columns: list[str | int] | None = None
    label_column: str | int = "label"
    is_regression: bool = False
    label_names: list[str] | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True
    drop_overlap: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.train_file and self.text_columns):
            raise ConfigError("data.task=custom needs data.train_file and data.text_columns.")
        if not 1 <= len(self.text_columns) <= 2:
            raise ConfigError("data.text_columns must name one column or a pair of columns.")
        if self.is_regression and self.label_names:
            raise ConfigError("data.label_names must be empty when data.is_regression is true.")
        if not self.header:
            named = [c for c in (*self.text_columns, self.label_column) if isinstance(c, str)]
            if named:
                raise ConfigError(
                    f"data.header=false: a file without a header line has no column names, so name columns "
                    f"by position (0 = the first), not {named}: e.g. data.text_columns=[0] "
                    "data.label_column=1."
                )

    def regression(self) -> bool:
        """``data.is_regression``."""
        return self.is_regression

    def metric_names(self) -> tuple[str, ...]:
        """Pearson/Spearman for regression; accuracy (and F1 with two classes) for classification."""
        keys: tuple[str, ...] = ("pearson", "spearmanr") if self.is_regression else ("accuracy", "f1")
        return keys + tuple(f"{k}_test" for k in keys) if self.split_dev and self.dev_file else keys


class CustomTask(ClassificationTask):
    """Your own labelled .csv/.tsv/.jsonl/.parquet files: classification or regression."""

    kind: ClassVar[str] = "custom"
    names: ClassVar[tuple[str, ...]] = ("custom",)
    Config: ClassVar[type[CustomData]] = CustomData

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """The data-section fields of the command-line task options (`distil.tasks.base.TaskFlags`)."""
        if not (flags.file and flags.text_columns):
            raise ConfigError("--task custom needs --file and --text-columns.")
        positional = not flags.header

        def column(value: str) -> str | int:
            value = value.strip()
            return int(value) if positional and value.isdigit() else value

        return {
            "train_file": flags.file,
            "dev_file": flags.file if eval_only else None,
            "header": flags.header,
            "text_columns": [column(c) for c in flags.text_columns],
            "label_column": column(flags.label_column),
            "is_regression": flags.regression,
        }

    def __init__(self, data: CustomData, seed: int, *, eval_only: bool = False) -> None:
        assert data.train_file and data.text_columns
        text, label = _columns(data, data.train_file)
        names = data.label_names
        if not data.is_regression and not names:
            names = list(infer_label_names(data.train_file, label, data.header))
        spec = custom_task(tuple(text), label, is_regression=data.is_regression, label_names=names)
        train = None if eval_only else load_custom(data.train_file, spec, header=data.header)
        devs = {}
        if data.dev_file:
            dev_text, dev_label = _columns(data, data.dev_file)
            devs["dev"] = load_custom(
                data.dev_file, spec, header=data.header, source_text=tuple(dev_text), source_label=dev_label
            )
        self._init_splits(spec, train, devs, data, seed)


def _columns(data: CustomData, path: str) -> tuple[list[str], str]:
    """The file's names of the text and label columns (given by name or by position)."""
    assert data.text_columns
    text = resolve_columns(path, data.header, list(data.text_columns), "text column (data.text_columns)")
    label = resolve_columns(path, data.header, [data.label_column], "label column (data.label_column)")[0]
    return text, label
