"""The ``Method`` contract: how a distillation method plugs into the one training loop.

A method is a small object, not a subclass of the loop: it says which features it needs from each
model, owns any extra trainable modules (projections, filters), and turns captured features into a
``LossOutput``. Every hook the loop calls is declared here with a no-op default, and the loop calls
every hook unconditionally; a method class subclasses ``Method`` to inherit those defaults and overrides
what it needs. Capabilities (``corrupts_inputs``, ``topk_temperature``) are declared, never inferred from a
hook's presence.

Methods import only ``distil.types``, ``distil.losses``, ``distil.adapters``, ``distil.models`` and
``distil.errors``: never the run config or the training loop (a test checks the imports). What a method
may know of the rest of the run comes through ``MethodContext`` (models, task facts) and, when its
config is checked, through ``distil.types.RunView``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.errors import ConfigError
from distil.types import Batch, FeatureRequest, Features, LossOutput, Resize, Runtime, RunView

__all__ = ["LogitMethod", "Method", "MethodConfig", "MethodContext", "require_labels"]


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


class MethodConfig(Protocol):
    """What every method's config dataclass provides beside its own fields."""

    @classmethod
    def tiny(cls) -> Any:
        """Settings for the generic tests on tiny models."""
        ...

    def check_run(self, run: RunView) -> None:
        """Raise ``ConfigError`` if these settings cannot train the run described by ``run``.

        Called when the run config is built, so ``distil validate`` reports it before any work.
        """
        ...

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs of ``run`` cannot be cached (after "method NAME"); ``None``: they can.

        They can when the method reads only the teacher's logits of clean inputs.
        `checks.teacher_cache_refusal` is the one rule that combines this with the task and the top-k
        cache; the method contract test checks it against `teacher_request` and `corrupts_inputs`.
        """
        ...


def require_labels(method: str, run: RunView) -> None:
    """Reject an unlabelled corpus for a method that needs a task loss or task logits."""
    if not run.labelled:
        raise ConfigError(
            f"Method {method!r} needs a labelled task (classification, regression, data.task=squad/"
            "squad_v2 or data.task=lm), not an unlabelled corpus (data.task=corpus); task-agnostic "
            "methods on a corpus are minilmv2, minilm, distilbert, tinybert and homodistil."
        )


@runtime_checkable
class Method(Protocol):
    """What the loop needs from a method; subclass it to inherit the no-op hooks.

    Class attributes:
        name: Registry name.
        Config: The method's config dataclass (a ``MethodConfig``).
        uses_teacher: Whether a teacher must be loaded.
        card: The method card (``docs/methods/<card>.md``) that documents it; stage methods share the
            card of their family (``ted_filters`` -> ``ted``).
    """

    name: ClassVar[str]
    Config: ClassVar[type[Any]]
    uses_teacher: ClassVar[bool]
    card: ClassVar[str]

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

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Weighted total plus named parts for one micro-batch (means over its examples)."""
        ...

    # --- declared capabilities ---------------------------------------------------------------------

    @property
    def corrupts_inputs(self) -> bool:
        """Whether ``prepare_batch`` changes the inputs both models see (e.g. MLM masking).

        The teacher's outputs of such batches differ from its outputs of the clean examples, so they
        cannot be cached.
        """
        return False

    @property
    def topk_temperature(self) -> float | None:
        """The temperature at which ``loss`` reads a top-k teacher cache; ``None``: it cannot read one.

        A cache (``Features.topk``, no logits) keeps the tail's log-mass at this temperature.
        """
        return None

    # --- hooks the loop always calls (no-op defaults) ----------------------------------------------

    @classmethod
    def model_head(cls, task_head: str) -> str:
        """The head both models carry: the task's (``seq``, ``qa``, ``lm``, ``base``) or another (``mlm``)."""
        return task_head

    def attach(self, runtime: Runtime) -> None:
        """Once the models are wrapped for training: how to run them outside the training step, the seed."""
        return None

    def prepare_batch(self, batch: Batch) -> Batch:
        """Transform a training batch before both forward passes (e.g. MLM masking).

        It may draw from the process's global RNG, whose state checkpoints restore.
        """
        return batch

    def on_gradients(self, scale: float) -> None:
        """After the last backward of a step, before the optimiser step: gradients final and synchronised.

        Args:
            scale: Factor that undoes float16 loss scaling (1 without it): the gradients are still scaled.
        """
        return None

    def on_step_end(self, step: int) -> Resize | None:
        """After every optimiser step (e.g. pruning); ``step`` counts from 1.

        A method that narrowed parameters in place returns which entries it kept (`distil.types.Resize`);
        the loop then cuts the optimizer's state alike and wraps the student again.
        """
        return None

    def restore_shapes(self, state: Mapping[str, torch.Tensor]) -> Resize | None:
        """Before a checkpoint's tensors load: give the student the shapes its method state records.

        ``state`` is what ``state_dict`` returned when the checkpoint was written; HomoDistil narrows the
        full-width copy it starts from to the widths it had pruned to, so the saved weights fit. The
        weights themselves load afterwards; the loop handles the returned `distil.types.Resize` as after
        ``on_step_end``.
        """
        return None

    def export_model(self, student: PreTrainedModel) -> PreTrainedModel:
        """The model written to ``best/`` and ``student/`` in place of the training-time student."""
        return student

    def evaluation_models(self, student: PreTrainedModel) -> dict[str, nn.Module]:
        """More models to score at each evaluation beside the student, by name (TED's filter heads).

        Each is called like the student (``input_ids``, ``attention_mask``...) and returns the student's
        output type; their metrics are logged as ``eval/<name>/<metric>``. They never select checkpoints.
        """
        return {}

    def end_notes(self) -> list[str]:
        """Warnings about what the run learned, printed after training and kept in the recipe."""
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Non-trainable state a resumed run needs (token counts, pruning scores); checkpoints save it."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but a checkpoint holds {sorted(state)}.")


class LogitMethod(Method):
    """A method that reads only the two models' logits and trains nothing beside the student (KD and kin).

    Clean inputs' logits are all such a method asks of the teacher, so its outputs may be cached (unless
    the method changes the inputs, as on-policy distillation does).
    """

    def student_request(self) -> FeatureRequest:
        """Only the logits."""
        return FeatureRequest(logits=True)

    def teacher_request(self) -> FeatureRequest | None:
        """Only the logits."""
        return FeatureRequest(logits=True)

    def trainable_modules(self) -> nn.ModuleDict:
        """Nothing beside the student."""
        return nn.ModuleDict()
