"""``distil eval``: metrics of a saved model on a task split."""

from __future__ import annotations

import argparse

from distil.data.batching import tokenize
from distil.data.sources import load_custom, load_glue_split, resolve_data_dir
from distil.data.tasks import custom_task, get_task
from distil.errors import ConfigError
from distil.evaluation.classification import evaluate
from distil.models.loading import load_model, load_tokenizer

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    """Load ``args.model`` and its tokenizer and evaluate on the requested split."""
    if args.task == "custom":
        if not (args.file and args.text_columns):
            raise ConfigError("--task custom needs --file and --text-columns.")
        task = custom_task(
            tuple(args.text_columns.split(",")),
            args.label_column,
            is_regression=args.regression,
            train_file=args.file,
        )
        raw = load_custom(args.file, task)
    else:
        task = get_task(args.task)
        raw = load_glue_split(task, args.split or task.dev_splits[0], resolve_data_dir(args.data_dir))
    model = load_model(args.model, head="seq", num_labels=task.num_labels, is_regression=task.is_regression)
    tokenizer = load_tokenizer(args.model)
    data = tokenize(raw, tokenizer, task, args.max_length)
    return evaluate(
        model, data, task, batch_size=args.batch_size, pad_token_id=int(tokenizer.pad_token_id or 0)
    )
