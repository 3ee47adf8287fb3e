"""The ``Method`` contract: how a distillation method plugs into the one training loop.

A method is a small object, not a subclass of the loop: it says which features it needs from each
model, owns any extra trainable modules (projections, filters), and turns captured features into a
``LossOutput``. The loop calls optional hooks only when a method defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.types import FeatureRequest, Features, LossOutput

__all__ = ["Method", "MethodContext"]


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about the run when it is built.

    Attributes:
        student: The model being trained.
        teacher: The frozen teacher, or ``None`` for methods that use none.
        is_regression: The task predicts one real number per example.
        num_labels: Classes of the task (1 for regression, 0 for unlabelled corpora).
        tokenizer: The tokenizer both models share (e.g. for MLM masking).
    """

    student: PreTrainedModel
    teacher: PreTrainedModel | None
    is_regression: bool
    num_labels: int
    tokenizer: PreTrainedTokenizerBase | None = None


@runtime_checkable
class Method(Protocol):
    """What the loop needs from a method.

    Class attributes:
        name: Registry name.
        Config: The method's config dataclass; ``Config.tiny()`` gives settings for generic tests.
        uses_teacher: Whether a teacher must be loaded.

    Optional hooks the loop calls when present:
        ``prepare_batch(batch) -> batch``: transform a training batch before both forward passes (e.g.
            MLM masking); it may use the global RNG, which checkpoints restore.
        ``on_step_end(step: int) -> None``: after every optimiser step (e.g. pruning).
        ``export_model(student) -> PreTrainedModel``: the model written to ``best/`` and ``student/`` in
            place of the training-time student (e.g. a pruned student sliced to its kept widths).
        classmethod ``model_head(task_head: str) -> str``: the head both models carry, when it is not the
            task's own (e.g. ``mlm`` on a corpus).
        classmethod ``stage_plan(cfg: RunConfig) -> list[tuple[str, RunConfig]]``: run the method as a
            sequence of ordinary runs (``distil.training.stages``).
    """

    name: ClassVar[str]
    Config: ClassVar[type[Any]]
    uses_teacher: ClassVar[bool]

    def __init__(self, cfg: Any, ctx: MethodContext) -> None: ...

    def student_request(self) -> FeatureRequest:
        """Features to capture from the student."""
        ...

    def teacher_request(self) -> FeatureRequest | None:
        """Features to capture from the teacher (``None`` when the method uses no teacher)."""
        ...

    def trainable_modules(self) -> nn.ModuleDict:
        """Extra modules trained beside the student and saved in checkpoints (may be empty)."""
        ...

    def loss(self, batch: dict[str, Any], student: Features, teacher: Features | None) -> LossOutput:
        """Weighted total plus named parts for one micro-batch (means over its examples)."""
        ...
