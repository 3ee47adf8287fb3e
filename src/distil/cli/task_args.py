"""Task options shared by ``distil eval``, ``bench`` and ``augment``: any task, built as training builds it.

The flags become the task kind's data section (`distil.tasks`), and the task is then loaded, tokenised and
scored by the same code as during training.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from distil.errors import ConfigError

if TYPE_CHECKING:
    from distil.tasks import Task

__all__ = ["add_task_options", "task_from_args"]


def add_task_options(p: argparse.ArgumentParser, role: str) -> None:
    """``--data-dir`` and the file options; ``role`` names the file in the help (``evaluation``)."""
    p.add_argument("--data-dir", help="Folder with glue/<TASK>/*.tsv or squad/v1.1/*.json.")
    p.add_argument(
        "--file",
        help=f"The {role} file: a custom task's .csv/.tsv/.jsonl, a SQuAD JSON, or the text of --task lm.",
    )
    p.add_argument("--text-columns", help="Custom task: comma-separated text column(s).")
    p.add_argument("--label-column", default="label", help="Custom task: label column.")
    p.add_argument("--regression", action="store_true", help="Custom task: real-valued labels.")


def _data_fields(args: argparse.Namespace, kind: str, eval_only: bool) -> dict[str, Any]:
    file = args.file
    if kind == "custom":
        if not (file and args.text_columns):
            raise ConfigError("--task custom needs --file and --text-columns.")
        return {
            "train_file": file,
            "dev_file": file if eval_only else None,
            "text_columns": args.text_columns.split(","),
            "label_column": args.label_column,
            "is_regression": args.regression,
        }
    if kind == "glue":
        return {"data_dir": args.data_dir, "dev_file": file if eval_only else None}
    if kind == "squad":
        return {"data_dir": args.data_dir, "dev_file": file}
    if kind == "lm":
        if not file:
            raise ConfigError("--task lm needs --file: the text whose perplexity is reported.")
        return {"corpus": [file], "dev_file": file}
    raise ConfigError(
        f"--task {args.task} has no evaluation; give a GLUE task, custom, squad, squad_v2 or lm."
    )


def task_from_args(args: argparse.Namespace, *, eval_only: bool, **fields: Any) -> tuple[Task, Any]:
    """The task of ``args.task`` and its data section; ``eval_only`` reads only the evaluation split.

    Args:
        args: Parsed options (``--task`` and those of `add_task_options`).
        eval_only: Read only what evaluation needs.
        fields: More data-section fields (``max_length``, ``dev_subset``); ``None`` values keep defaults.

    Returns:
        The task (not yet tokenised) and its data section.

    Raises:
        DistilError: An unknown task, a missing option, or a data file that cannot be read.
    """
    from distil.schema import from_dict
    from distil.tasks import task_class

    cls = task_class(args.task)
    values = {"task": args.task, **_data_fields(args, cls.kind, eval_only)}
    values |= {k: v for k, v in fields.items() if v is not None}
    data = from_dict(cls.Config, values, "data")
    return cls(data, 0, eval_only=eval_only), data
