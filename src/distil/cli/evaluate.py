"""``distil eval``: a saved model scored on a task by that task's own evaluation, as during training."""

from __future__ import annotations

import argparse

from distil.cli.task_args import task_from_args
from distil.errors import ConfigError, ModelError
from distil.models.loading import load_model, load_tokenizer, model_label_names
from distil.tasks.classification import ClassificationTask

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    """Load ``args.model`` and its tokenizer and evaluate it on the task's dev data (or ``--split``)."""
    lengths = {"max_length": args.max_length, "doc_stride": args.doc_stride, "eval_stride": args.eval_stride}
    labels = model_label_names(args.model) if args.task == "custom" and not args.regression else None
    # The model's own class order, not the file's: a file that lacks a class must still score correctly.
    task, data = task_from_args(args, eval_only=True, label_names=labels, **lengths)
    if args.split:
        if not isinstance(task, ClassificationTask):
            raise ConfigError(f"--split applies to GLUE tasks; --task {args.task} is scored on its --file.")
        task.use_split(args.split)
    _check_head(args.model, task.head, args.task)
    num_labels = task.num_labels if task.head == "seq" else None
    model = load_model(
        args.model,
        head=task.head,
        num_labels=num_labels,
        is_regression=task.is_regression,
        attn_implementation=args.attn_implementation,
        dtype=args.dtype,
    )
    task.prepare(load_tokenizer(args.model), data.max_length)
    return task.evaluate(model, args.batch_size)


def _check_head(model: str, head: str, task: str) -> None:
    """Refuse a checkpoint without a trained head for the task: scoring a fresh head measures noise."""
    from transformers import AutoConfig

    from distil.deploy.runtime import head_of
    from distil.models.loading import resolve_model_path

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except (OSError, ValueError):
        return  # load_model names what is wrong with the folder
    has = head_of(config)
    if has != head:
        names = {"seq": "sequence-classification", "qa": "question-answering", "lm": "causal-LM",
                 "mlm": "masked-LM", "base": "bare encoder (no head)"}  # fmt: skip
        archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures"
        raise ModelError(
            f"{model} is a {names.get(has, has)} checkpoint ({archs}), without the trained "
            f"{names.get(head, head)} head that --task {task} scores; a fresh head would score noise. "
            "Evaluate a model trained for this task (a run's student/ folder)."
        )
