"""Plain task fine-tuning with no teacher: the 'no distillation' baseline and teacher preparation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from distil.losses import task_loss
from distil.methods.base import Method, MethodContext, require_labels
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["Finetune", "FinetuneConfig"]


@dataclass
class FinetuneConfig:
    """Fine-tuning has no settings of its own; optimisation lives in ``train``."""

    name: ClassVar[str] = "finetune"

    @classmethod
    def tiny(cls) -> FinetuneConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """Fine-tuning needs labels, and there is no teacher to cache."""
        require_labels("finetune", run)

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "uses no teacher"


class Finetune(Method):
    """Cross-entropy (or MSE for regression) on the task labels."""

    name: ClassVar[str] = "finetune"
    Config: ClassVar[type[FinetuneConfig]] = FinetuneConfig
    uses_teacher: ClassVar[bool] = False
    card: ClassVar[str] = "finetune"

    def __init__(self, cfg: FinetuneConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.is_regression = ctx.is_regression

    def student_request(self) -> FeatureRequest:
        """Only the logits."""
        return FeatureRequest(logits=True)

    def teacher_request(self) -> FeatureRequest | None:
        """No teacher."""
        return None

    def trainable_modules(self) -> nn.ModuleDict:
        """Nothing beside the student."""
        return nn.ModuleDict()

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """The task loss alone."""
        assert student.logits is not None and batch.labels is not None
        task = task_loss(student.logits, batch.labels, self.is_regression)
        return LossOutput(total=task, parts={"task": task})
