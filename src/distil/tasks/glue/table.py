"""The GLUE task table: what each task reads, how its labels map to ids, and how it is scored.

Label ids follow the Hugging Face ``nyu-mll/glue`` dataset, so a model fine-tuned on hub data and one
fine-tuned on the official TSV files agree. ``main_metric`` (used to pick the best checkpoint) follows
the GLUE paper's convention: MCC for CoLA, F1 for MRPC and QQP, Spearman correlation for STS-B (as in
the BERT paper's GLUE table), accuracy elsewhere.
"""

from __future__ import annotations

from distil.data.spec import GlueLayout, TaskSpec
from distil.errors import ConfigError, closest
from distil.metrics import GLUE_METRIC_KEYS, canonical_task_name

__all__ = ["GLUE_TASKS", "get_task"]

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
