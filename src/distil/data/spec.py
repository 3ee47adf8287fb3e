"""What a sequence classification or regression task is: its columns, labels and metrics (`TaskSpec`).

GLUE's specs are in `distil.tasks.glue.table`; ``custom_task`` makes the spec of the user's own files.
Tokenisation, batching, augmentation and evaluation read a spec whatever the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from distil.errors import ConfigError

__all__ = ["GlueLayout", "TaskSpec", "custom_task"]


@dataclass(frozen=True)
class GlueLayout:
    """Where and how the official GLUE TSV files of one task are laid out.

    Attributes:
        folder: Folder under ``<data-dir>/glue/`` (``SST-2``, ``MNLI``, ...).
        files: ``(split, file name)`` pairs, e.g. ``("validation_matched", "dev_matched.tsv")``.
        column_names: Column names for a headerless file (CoLA); ``None`` when the first line is a header.
        text_columns: The file's text columns, in the order of ``TaskSpec.text_columns``.
        label_column: The file's label column.
        raw_labels: The file's label value for each id in id order; ``None`` for regression.
        encoding: File encoding; ``utf-8-sig`` strips MRPC's byte-order mark from the first column name.
    """

    folder: str
    files: tuple[tuple[str, str], ...]
    column_names: tuple[str, ...] | None
    text_columns: tuple[str, ...]
    label_column: str
    raw_labels: tuple[str, ...] | None
    encoding: str = "utf-8"

    def file_for(self, split: str) -> str:
        """Return the file name of ``split`` (``KeyError`` when the task has no such split)."""
        return dict(self.files)[split]


@dataclass(frozen=True)
class TaskSpec:
    """A sequence classification or regression task.

    Attributes:
        name: Task name (``sst2``, ..., or ``custom``).
        text_columns: One text column, or two for sentence pairs, as the loaded dataset names them.
        label_column: Label column in the source file (GLUE data is always loaded into ``label``).
        label_names: Class names in id order; ``None`` for regression.
        is_regression: Labels are real numbers (one output unit, MSE loss).
        metrics: Metric keys reported at evaluation (see ``distil.metrics.METRICS``).
        main_metric: The metric that selects the best checkpoint; higher is better.
        hf_config: Config name of the task in the ``nyu-mll/glue`` hub dataset; ``None`` for custom tasks.
        layout: Layout of the official GLUE files; ``None`` for custom tasks.
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...] | None
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    hf_config: str | None = None
    layout: GlueLayout | None = None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: 1 for regression, else the number of classes."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names of a GLUE task (``train``, ``validation``...); empty for custom tasks."""
        return tuple(split for split, _ in self.layout.files) if self.layout else ()

    @property
    def dev_splits(self) -> tuple[str, ...]:
        """The labelled evaluation splits (MNLI has a matched and a mismatched one)."""
        return tuple(split for split in self.splits if split != "train")

    @property
    def raw_labels(self) -> tuple[str, ...] | None:
        """Label values as written in the source file, in id order; ``None`` for regression."""
        return self.layout.raw_labels if self.layout else self.label_names


def custom_task(
    text_columns: Sequence[str],
    label_column: str = "label",
    is_regression: bool = False,
    label_names: Sequence[str] | None = None,
) -> TaskSpec:
    """Describe a task read from the user's own CSV, TSV or JSON Lines files.

    Classification is scored with accuracy (plus binary F1 when there are two classes) and selected on
    accuracy; regression with Pearson and Spearman correlation, selected on Spearman as for STS-B.

    Args:
        text_columns: One text column, or two for sentence pairs.
        label_column: The label column.
        is_regression: Labels are real numbers.
        label_names: For classification, the label values as written in the files, in id order (see
            ``distil.tasks.custom.reader.infer_label_names`` to take them from a training file).

    Returns:
        The task's spec, named ``custom``.

    Raises:
        ConfigError: Wrong number of text columns, or label names missing, duplicated or given for regression.
    """
    # A bare string would otherwise be split into one-character column names.
    columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    if not 1 <= len(columns) <= 2:
        raise ConfigError(f"data.text_columns must name one column or a pair; got {list(columns)}.")
    if is_regression:
        if label_names:
            raise ConfigError("data.label_names must be empty when data.is_regression is true.")
        return TaskSpec("custom", columns, label_column, None, True, ("pearson", "spearmanr"), "spearmanr")
    names = tuple(str(n) for n in label_names or ())
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(
            f"data.label_names must list at least two distinct label values in id order (or give a training "
            f"file to infer them from); got {list(names)}."
        )
    metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
    return TaskSpec("custom", columns, label_column, names, False, metrics, "accuracy")
