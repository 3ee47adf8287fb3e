"""Reading your own labelled files: CSV (comma, quoted), TSV (tab, verbatim), JSON Lines or Parquet."""

from __future__ import annotations

from pathlib import Path

import datasets

from distil.data.readers import CUSTOM_FIX, column_values, read_user_file, to_task_columns
from distil.data.spec import TaskSpec
from distil.errors import DataError

__all__ = ["infer_label_names", "load_custom"]


def load_custom(
    path: str | Path,
    task: TaskSpec,
    *,
    header: bool = True,
    source_text: tuple[str, ...] | None = None,
    source_label: str | None = None,
) -> datasets.Dataset:
    """Load a user's CSV (comma, quoted), TSV (tab, verbatim), JSON Lines or Parquet file, by extension.

    Args:
        path: A ``.csv``, ``.tsv``, ``.jsonl``/``.json`` (JSON Lines) or ``.parquet`` file.
        task: A spec from ``custom_task``; its ``text_columns`` and ``label_column`` name the file's columns.
        header: CSV/TSV: the first line names the columns; ``False``: they are ``"0"``, ``"1"``, ...
        source_text: This file's names of the text columns when they differ from the spec's.
        source_label: This file's name of the label column when it differs from the spec's.

    Returns:
        A dataset with ``task.text_columns`` and ``label`` (ids in ``task.label_names`` order, or floats).

    Raises:
        DataError: The file is missing, empty, of an unknown type, lacks a column, or has a bad label.
    """
    fix = (
        "Fix the row, or set data.label_names to the file's label values in id order "
        "(data.is_regression: true for real-valued labels)."
    )
    text = tuple(source_text or task.text_columns)
    label = source_label or task.label_column
    needed = {c: "text column (data.text_columns)" for c in text}
    needed[label] = "label column (data.label_column)"
    ds = read_user_file(path, needed, CUSTOM_FIX, header)
    return to_task_columns(ds, task, Path(path), text, label, fix)


def infer_label_names(path: str | Path, label_column: str, header: bool = True) -> tuple[str, ...]:
    """Derive class names from a training file: its distinct label values, sorted.

    Integer labels sort numerically (``2`` before ``10``) and come before other labels, which sort as text.

    Args:
        path: The training file (``.csv``, ``.tsv`` or ``.jsonl``).
        label_column: Its label column.
        header: CSV/TSV: the first line names the columns (else they are numbered from ``"0"``).

    Returns:
        The label values in id order.

    Raises:
        DataError: The file cannot be read, lacks the column, or has fewer than two distinct labels.
    """
    ds = read_user_file(path, {label_column: "label column (data.label_column)"}, CUSTOM_FIX, header)
    values = {v.strip() if isinstance(v, str) else str(v) for v in column_values(ds, label_column)}
    if len(values) < 2:
        raise DataError(
            f"{path}: column {label_column!r} has fewer than two distinct labels {sorted(values)}; "
            "classification needs two or more (set data.is_regression: true for real-valued labels)."
        )

    def order(value: str) -> tuple[int, int, str]:
        try:
            return (0, int(value), "")
        except ValueError:
            return (1, 0, value)

    return tuple(sorted(values, key=order))
