"""``distil eval``: metrics of a saved model on a task split."""

from __future__ import annotations

import argparse

from distil.cli.task_args import load_task_split
from distil.data.batching import tokenize
from distil.evaluation.classification import evaluate
from distil.models.loading import load_model, load_tokenizer

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    """Load ``args.model`` and its tokenizer and evaluate on the requested split."""
    task, raw = load_task_split(args, args.split)
    model = load_model(args.model, head="seq", num_labels=task.num_labels, is_regression=task.is_regression)
    tokenizer = load_tokenizer(args.model)
    data = tokenize(raw, tokenizer, task, args.max_length)
    return evaluate(
        model, data, task, batch_size=args.batch_size, pad_token_id=int(tokenizer.pad_token_id or 0)
    )
