"""Task table: what each GLUE task reads, how its labels map to ids, and how it is scored.

Label ids follow the Hugging Face ``nyu-mll/glue`` dataset, so a model fine-tuned on hub data and one
fine-tuned on the official TSV files agree. ``main_metric`` (used to pick the best checkpoint) follows
the GLUE paper's convention: MCC for CoLA, F1 for MRPC and QQP, Spearman correlation for STS-B (as in
the BERT paper's GLUE table), accuracy elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from distil.errors import ConfigError, closest
from distil.metrics import GLUE_METRIC_KEYS, canonical_task_name

__all__ = ["GLUE_TASKS", "GlueLayout", "TaskSpec", "custom_task", "get_task"]


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


_DEV = (("train", "train.tsv"), ("validation", "dev.tsv"))
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_HEADER_PAIR = ("sentence1", "sentence2")


def _glue(
    name: str, text: tuple[str, ...], labels: tuple[str, ...] | None, main: str, layout: GlueLayout
) -> TaskSpec:
    return TaskSpec(
        name=name,
        text_columns=text,
        label_column="label",
        label_names=labels,
        is_regression=labels is None,
        metrics=GLUE_METRIC_KEYS[name],
        main_metric=main,
        hf_config=name,
        layout=layout,
    )


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": _glue(
        "cola", ("sentence",), ("unacceptable", "acceptable"), "matthews_correlation",
        GlueLayout("CoLA", _DEV, ("source", "label", "mark", "sentence"), ("sentence",), "label", _BINARY),
    ),
    "sst2": _glue(
        "sst2", ("sentence",), ("negative", "positive"), "accuracy",
        GlueLayout("SST-2", _DEV, None, ("sentence",), "label", _BINARY),
    ),
    "mrpc": _glue(
        "mrpc", _HEADER_PAIR, ("not_equivalent", "equivalent"), "f1",
        GlueLayout("MRPC", _DEV, None, ("#1 String", "#2 String"), "Quality", _BINARY, "utf-8-sig"),
    ),
    "stsb": _glue(
        "stsb", _HEADER_PAIR, None, "spearmanr",
        GlueLayout("STS-B", _DEV, None, _HEADER_PAIR, "score", None),
    ),
    "qqp": _glue(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1",
        GlueLayout("QQP", _DEV, None, ("question1", "question2"), "is_duplicate", _BINARY),
    ),
    "mnli": _glue(
        "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "accuracy",
        GlueLayout(
            "MNLI",
            (("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
             ("validation_mismatched", "dev_mismatched.tsv")),
            None, _HEADER_PAIR, "gold_label", ("entailment", "neutral", "contradiction"),
        ),
    ),
    "qnli": _glue(
        "qnli", ("question", "sentence"), _NLI2, "accuracy",
        GlueLayout("QNLI", _DEV, None, ("question", "sentence"), "label", _NLI2),
    ),
    "rte": _glue(
        "rte", _HEADER_PAIR, _NLI2, "accuracy", GlueLayout("RTE", _DEV, None, _HEADER_PAIR, "label", _NLI2)
    ),
    # WNLI's files write 1 for entailment, which is also the hub's id order (not_entailment = 0).
    "wnli": _glue(
        "wnli", _HEADER_PAIR, ("not_entailment", "entailment"), "accuracy",
        GlueLayout("WNLI", _DEV, None, _HEADER_PAIR, "label", _BINARY),
    ),
}  # fmt: skip


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name or alias (``sst2``, ``SST-2``, ``mnli_matched``...).

    Args:
        name: Task name, case-insensitive.

    Returns:
        The task's spec.

    Raises:
        ConfigError: The name is unknown; the message lists the tasks and a close match.
    """
    try:
        return GLUE_TASKS[canonical_task_name(name)]
    except ConfigError:
        valid = ", ".join(GLUE_TASKS)
        hint = closest(name.lower(), GLUE_TASKS)
        raise ConfigError(
            f"Unknown task {name!r} (data.task); valid tasks: {valid}, or 'custom' with data files.{hint}"
        ) from None


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
            ``distil.data.sources.infer_label_names`` to take them from a training file).

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
