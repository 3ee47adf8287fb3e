"""Task options shared by ``distil eval``, ``bench`` and ``augment``: any task, built as training builds it.

The flags become the task kind's data section (`distil.tasks`), and the task is then loaded, tokenised and
scored by the same code as during training.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from distil.errors import DistilError

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
    p.add_argument(
        "--text-columns", help="Custom task: comma-separated text column(s), names or 0-based positions."
    )
    p.add_argument("--label-column", default="label", help="Custom task: label column (name or position).")
    p.add_argument("--regression", action="store_true", help="Custom task: real-valued labels.")
    p.add_argument(
        "--no-header",
        action="store_true",
        help="Custom task: the CSV/TSV file has no header line; name columns by position (0 = the first).",
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
    from distil.tasks.base import TaskFlags

    try:
        cls = task_class(args.task)
        flags = TaskFlags(
            file=args.file,
            data_dir=args.data_dir,
            text_columns=tuple(args.text_columns.split(",")) if args.text_columns else (),
            label_column=args.label_column,
            regression=args.regression,
            header=not args.no_header,
        )
        values = {"task": args.task, **cls.data_from_flags(flags, eval_only)}
        values |= {k: v for k, v in fields.items() if v is not None}
        data = from_dict(cls.Config, values, "data")
        return cls(data, 0, eval_only=eval_only), data
    except DistilError as err:  # the readers name config keys; here the user typed flags
        raise type(err)(_as_flags(str(err))) from err


# Config keys the data readers name, and the flags of these commands that set them.
_FLAGS = (
    ("data.train_file/data.dev_file", "--file"),
    ("data.train_file", "--file"),
    ("data.dev_file", "--file"),
    ("data.text_columns", "--text-columns"),
    ("data.label_column", "--label-column"),
    ("data.is_regression: true", "--regression"),
    ("data.is_regression", "--regression"),
    ("data.header=false", "--no-header"),
    ("data.label_names", "the model's labels (id2label in its config.json)"),
    ("data.max_length", "--max-length"),
    ("data.data_dir", "--data-dir"),
)


def _as_flags(message: str) -> str:
    for key, flag in _FLAGS:
        message = message.replace(key, flag)
    return message
