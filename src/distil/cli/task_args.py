"""Task options shared by ``distil eval``, ``bench`` and ``augment``: a GLUE task or a custom file."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from distil.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

    from distil.data.tasks import TaskSpec

__all__ = ["add_task_options", "load_task_split"]


def add_task_options(p: argparse.ArgumentParser, role: str) -> None:
    """``--data-dir`` and the custom-file options; ``role`` names the file in the help (``evaluation``)."""
    p.add_argument("--data-dir", help="Folder with glue/<TASK>/*.tsv.")
    p.add_argument("--file", help=f"Custom task: {role} file (.csv, .tsv, .jsonl).")
    p.add_argument("--text-columns", help="Custom task: comma-separated text column(s).")
    p.add_argument("--label-column", default="label", help="Custom task: label column.")
    p.add_argument("--regression", action="store_true", help="Custom task: real-valued labels.")


def load_task_split(args: argparse.Namespace, split: str | None) -> tuple[TaskSpec, Dataset]:
    """The task of ``args.task`` and its rows: ``--file`` for ``custom``, else GLUE ``split`` (None: dev)."""
    from distil.data.sources import load_custom, load_glue_split, resolve_data_dir
    from distil.data.tasks import custom_task, get_task

    if args.task == "custom":
        if not (args.file and args.text_columns):
            raise ConfigError("--task custom needs --file and --text-columns.")
        columns = tuple(args.text_columns.split(","))
        task = custom_task(columns, args.label_column, is_regression=args.regression, train_file=args.file)
        return task, load_custom(args.file, task)
    task = get_task(args.task)
    return task, load_glue_split(task, split or task.dev_splits[0], resolve_data_dir(args.data_dir))
