"""Reading GLUE: the official TSV files, the ``nyu-mll/glue`` hub dataset, or a file in a task's columns."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import datasets

from distil.data.readers import TRUE, read_delimited, read_user_file, to_task_columns
from distil.data.spec import TaskSpec
from distil.errors import ConfigError, DataError, closest
from distil.tasks.glue.table import get_task

__all__ = ["load_glue_split", "load_task_file"]


def load_glue_split(task: TaskSpec | str, split: str, data_dir: Path | None) -> datasets.Dataset:
    """Load one split of a GLUE task.

    With ``data_dir`` the official TSV is read from ``<data_dir>/glue/<Folder>/<file>`` (or
    ``<data_dir>/<Folder>/<file>`` when ``data_dir`` is the ``glue`` folder itself). Without it the
    ``nyu-mll/glue`` hub dataset is used, unless ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set.

    Args:
        task: A GLUE task spec (or its name).
        split: ``train`` or ``validation``; for MNLI ``validation_matched`` or ``validation_mismatched``.
        data_dir: The folder from ``resolve_data_dir``, or ``None``.

    Returns:
        A dataset with ``task.text_columns`` and ``label`` (ids as in ``nyu-mll/glue``; floats for STS-B).

    Raises:
        ConfigError: The task is not a GLUE task or has no such split.
        DataError: The file is missing or malformed, or no data source is available.
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.layout is None or task.hf_config is None:
        raise ConfigError(f"Task {task.name!r} is not a GLUE task; load its files with load_custom.")
    if split not in task.splits:
        raise ConfigError(
            f"GLUE {task.name} has no split {split!r}; the splits are {', '.join(task.splits)}."
            + closest(split, task.splits)
        )
    layout, file_name = task.layout, task.layout.file_for(split)
    if data_dir is None:
        return _load_hub(task, split, f"{layout.folder}/{file_name}")
    folder = Path(data_dir) / "glue" / layout.folder
    if not folder.is_dir() and (Path(data_dir) / layout.folder).is_dir():
        folder = Path(data_dir) / layout.folder
    path = folder / file_name
    if not path.is_file():
        present = (
            f" {folder} holds only {sorted(p.name for p in folder.iterdir())}." if folder.is_dir() else ""
        )
        raise DataError(
            f"GLUE {task.name} {split} data not found: expected {path}.{present} Put the official GLUE file "
            f"there, or point --data-dir / DISTIL_DATA at the folder with glue/{layout.folder}/{file_name}."
        )
    fix = f"This is not the official GLUE {layout.folder} layout; restore the original file."
    needed = {c: "text column" for c in layout.text_columns} | {layout.label_column: "label column"}
    ds = read_delimited(
        path,
        needed,
        fix,
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        encoding=layout.encoding,
        column_names=layout.column_names,
    )
    return to_task_columns(ds, task, path, layout.text_columns, layout.label_column, fix)


def _load_hub(task: TaskSpec, split: str, relative: str) -> datasets.Dataset:
    where = (
        f"put the official GLUE files at <data-dir>/glue/{relative} and pass --data-dir <data-dir> or set "
        "DISTIL_DATA=<data-dir> (a ../shared/data folder next to the working directory is found by itself)"
    )
    offline = [
        var for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(var, "").lower() in TRUE
    ]
    if offline:
        raise DataError(f"No local data for GLUE {task.name} and {offline[0]} forbids downloads: {where}.")
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.hf_config, split=split)
    except Exception as err:  # network, auth and hub errors have no common base class
        raise DataError(
            f"Downloading nyu-mll/glue ({task.hf_config}) failed ({err}); instead {where}."
        ) from err
    return ds.select_columns([*task.text_columns, "label"])


def load_task_file(path: str | Path, task: TaskSpec) -> datasets.Dataset:
    """Load a file in a GLUE task's own columns instead of an official split (``distil augment`` output).

    Args:
        path: A ``.csv``, ``.tsv`` or ``.jsonl`` file with ``task.text_columns`` and ``label`` holding the
            official GLUE label values (``0``/``1`` for SST-2, ``entailment``... for MNLI, scores for STS-B).
        task: The GLUE task.

    Raises:
        DataError: The file is missing, empty, of an unknown type, lacks a column, or has a bad label.
    """
    columns = [*task.text_columns, "label"]
    fix = (
        f"A data.train_file/data.dev_file for GLUE {task.name} needs the columns {columns} with the official "
        "label values, as `distil augment` writes them."
    )
    needed = {c: "text column" for c in task.text_columns} | {"label": "label column"}
    ds = read_user_file(path, needed, fix)
    return to_task_columns(ds, task, Path(path), task.text_columns, "label", fix)
