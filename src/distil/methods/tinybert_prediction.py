"""TinyBERT-style prediction-layer distillation (Jiao et al., Findings of EMNLP 2020, arXiv:1909.10351).

The second task-specific stage of TinyBERT: a soft cross-entropy between the teacher's and the student's
task logits at temperature ``t`` (MSE for regression, as in TinyBERT's ``task_distill``). The ``tinybert``
plan (`distil.plans.tinybert`) runs it after the layer stage (`distil.methods.tinybert`) on a labelled
task. Settings and choices: ``docs/methods/tinybert.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distil.errors import ConfigError
from distil.losses import logit_mse, soft_cross_entropy
from distil.methods.base import LogitMethod, MethodContext, require_labels
from distil.types import Batch, Features, LossOutput, RunView

__all__ = ["TinyBERTPrediction", "TinyBERTPredictionConfig"]


@dataclass
class TinyBERTPredictionConfig:
    """TinyBERT-style prediction-layer settings.

    Attributes:
        temperature: Softmax temperature ``t`` of the soft cross-entropy (paper: 1).
    """

    temperature: float = 1.0

    name: ClassVar[str] = "tinybert_prediction"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")

    @classmethod
    def tiny(cls) -> TinyBERTPredictionConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """Task logits need a labelled task with a classification or regression head."""
        require_labels("tinybert_prediction", run)
        if run.head != "seq":
            raise ConfigError(
                f"Method 'tinybert_prediction' distils classification or regression logits, not the "
                f"{run.head!r} head of data.task={run.task}."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return None


class TinyBERTPrediction(LogitMethod):
    """Soft cross-entropy on the task logits (MSE for regression); the teacher's logits can be cached."""

    name: ClassVar[str] = "tinybert_prediction"
    Config: ClassVar[type[TinyBERTPredictionConfig]] = TinyBERTPredictionConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "tinybert"

    def __init__(self, cfg: TinyBERTPredictionConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.is_regression = ctx.is_regression

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """The soft cross-entropy (or the logit MSE for regression)."""
        assert teacher is not None and student.logits is not None and teacher.logits is not None
        if self.is_regression:  # TinyBERT's task_distill uses MSE for regression tasks
            pred = logit_mse(student.logits, teacher.logits)
        else:
            pred = soft_cross_entropy(student.logits, teacher.logits, self.cfg.temperature)
        return LossOutput(total=pred, parts={"prediction": pred})
