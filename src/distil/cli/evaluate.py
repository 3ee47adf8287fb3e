"""``distil eval``: a saved model scored on a task by that task's own evaluation, as during training."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from distil.cli.task_args import task_from_args
from distil.errors import ConfigError, ModelError
from distil.models.loading import load_model, load_tokenizer, model_label_names
from distil.tasks.classification import ClassificationTask

__all__ = ["evaluate_checkpoint", "format_report"]


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Load ``args.model`` and its tokenizer and evaluate it on the task's dev data (or ``--split``).

    Returns:
        The report: ``metrics`` (the task's own, as training scores it), ``rows`` scored per split, and for
        classification ``classes`` (precision, recall, F1 and support per class) and ``confusion`` (rows:
        true class, columns: predicted) on the first split.
    """
    lengths = {"max_length": args.max_length, "doc_stride": args.doc_stride, "eval_stride": args.eval_stride}
    labels = model_label_names(args.model) if args.task == "custom" and not args.regression else None
    # The model's own class order, not the file's: a file that lacks a class must still score correctly.
    task, data = task_from_args(args, eval_only=True, label_names=labels, dev_subset=_subset(args), **lengths)
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
    report: dict[str, Any] = {"model": str(args.model), "task": args.task}
    if isinstance(task, ClassificationTask):
        by_split = task.predictions(model, args.batch_size)  # one pass: metrics and per-class from it
        report["metrics"] = task.metrics_of(by_split)
    else:
        report["metrics"] = task.evaluate(model, args.batch_size)
    if getattr(args, "teacher", None):
        agreement, generations = _teacher_agreement(args, task, model)
        report["metrics"] |= agreement
        report["generations"] = generations
    report["rows"] = _rows(task)
    if isinstance(task, ClassificationTask) and not task.is_regression:
        report |= _per_class(task, *next(iter(by_split.items())))
    return report


def _teacher_agreement(
    args: argparse.Namespace, task: Any, student: Any
) -> tuple[dict[str, float], list[dict[str, str]]]:
    """Agreement of ``student`` with ``--teacher`` on chat data, and a few generations side by side."""
    from distil.models.loading import check_same_vocabulary
    from distil.tasks.chat import ChatTask
    from distil.tasks.chat.agreement import generation_agreement, token_agreement

    if not isinstance(task, ChatTask):
        raise ConfigError(
            f"--teacher compares generations on chat data (--task chat), not --task {args.task}."
        )
    tokenizer = load_tokenizer(args.model)
    check_same_vocabulary(load_tokenizer(args.teacher), tokenizer)
    _check_head(args.teacher, "lm", args.task)
    teacher = load_model(
        args.teacher, head="lm", attn_implementation=args.attn_implementation, dtype=args.dtype
    )
    assert task.dev_set is not None
    metrics = token_agreement(student, teacher, task.dev_set, task.collate, args.batch_size)
    eos = student.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    scores, samples = generation_agreement(
        student, teacher, task.dev_set, args.batch_size, args.max_new_tokens, task.pad_token_id, eos_ids
    )
    shown = [
        {k: str(tokenizer.decode(v, skip_special_tokens=k != "prompt")) for k, v in x.items()}
        for x in samples[:5]
    ]
    return metrics | scores, shown


def _subset(args: argparse.Namespace) -> int | None:
    subset = getattr(args, "subset", None)
    if subset is not None and subset < 1:
        raise ConfigError(f"--subset must be >= 1, got {subset}.")
    return subset


def _rows(task: Any) -> dict[str, int]:
    """Rows (examples, questions or perplexity windows) scored per split."""
    splits = getattr(task, "dev_sets", None) or {"dev": getattr(task, "dev_set", None)}
    return {name: len(rows) for name, rows in splits.items() if rows is not None}


def _per_class(task: ClassificationTask, split: str, scored: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, and the confusion matrix, of one split's predictions."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    preds, refs = scored
    ids = list(range(task.num_labels))
    names = list(task.spec.label_names or []) or [str(i) for i in ids]
    precision, recall, f1, support = precision_recall_fscore_support(refs, preds, labels=ids, zero_division=0)
    classes = {
        names[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
        for i in ids
    }  # fmt: skip
    return {
        "split": split,
        "classes": classes,
        "confusion": confusion_matrix(refs, preds, labels=ids).tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report for people; its last line is the metrics as ``key=value`` pairs."""
    rows = report.get("rows") or {}
    lines = (
        ["[distil] scored " + ", ".join(f"{n} rows of {split}" for split, n in rows.items())] if rows else []
    )
    if "classes" in report:
        lines += [f"Per class on {report['split']}:", "", "| class | precision | recall | f1 | support |"]
        lines.append("|---|---|---|---|---|")
        for name, c in report["classes"].items():
            lines.append(
                f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
            )
        names = list(report["classes"])
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
        lines += ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [
            f"| {n} | " + " | ".join(str(v) for v in row) + " |"
            for n, row in zip(names, report["confusion"], strict=True)
        ]
        lines.append("")
    for n, g in enumerate(report.get("generations", []), 1):  # --teacher: greedy completions side by side
        lines += [f"Generation {n}: ...{g['prompt'][-80:]!r}"]
        lines += [f"  {who:<9} {g[who]!r}" for who in ("teacher", "student", "reference")]
    lines.append(" ".join(f"{k}={v:.4f}" for k, v in report["metrics"].items()))
    return "\n".join(lines)


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
