"""TED Stage I: task-aware filters learned on a frozen model (Liang et al., ICML 2023, arXiv:2210.01351).

Each filter ``g^k`` (a per-token map on layer ``k``'s hidden states) gets a head that solves the task from
the filter's output alone; the model itself is frozen, so the filters learn to keep the task-relevant
part of each layer. The teacher's filters sit on its layers ``M(k)`` (``side: teacher``), the student's on
all its layers (``side: student``). The heads follow the task (`distil.methods._ted_heads`). The ``ted``
plan (`distil.plans.ted`) runs this stage for both models before Stage II (`distil.methods.ted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    CausalLMOutput,
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)

from distil.adapters import forward_features
from distil.adapters.projections import LayerProjections, activation_of
from distil.errors import ConfigError
from distil.losses import task_loss
from distil.methods._ted_chance import LabelPrior
from distil.methods._ted_heads import Pooling, filter_heads, head_kind
from distil.methods.base import Method, MethodContext, require_labels
from distil.models.families import num_layers
from distil.models.layer_maps import resolve_layer_map
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["CHANCE_NOTE", "TEDFilters", "TEDFiltersConfig"]

# How a note about a filter that learned nothing begins; the ted plan stops on it (plan.allow_chance_filters).
CHANCE_NOTE = "TED filter on layer "


@dataclass
class TEDFiltersConfig:
    """TED Stage I settings.

    Attributes:
        side: Whose filters are learned. ``teacher``: the run's student *is* the teacher checkpoint
            (filters on layers ``M(k)``); ``student``: filters on the student's layers ``1..K``, whose
            width ``d_f`` defaults to the teacher's hidden size (the run's teacher).
        layer_map: ``paper``, ``uniform`` or an explicit list of K 1-indexed teacher layers.
        student_depth: Student depth K, needed only by ``side: teacher`` with a named ``layer_map``.
        filter_type: ``linear`` (released default) or ``mlp`` (Linear-act-Linear).
        filter_dim: Filter output size d_f (default: the teacher's hidden size).
        head_dropout: Dropout of the classification heads (default: the model's classifier dropout);
            QA and LM heads are single linear maps without dropout.
        pooling: How classification heads pool the tokens: ``auto`` (mean over real tokens for encoders,
            the last real token for decoders), ``first`` (token 0, the released code), ``mean``, ``last``.
    """

    side: Literal["teacher", "student"] = "student"
    layer_map: Literal["paper", "uniform"] | list[int] = "paper"
    student_depth: int | None = None
    filter_type: Literal["linear", "mlp"] = "linear"
    filter_dim: int | None = None
    head_dropout: float | None = None
    pooling: Pooling = "auto"

    name: ClassVar[str] = "ted_filters"

    def __post_init__(self) -> None:
        for name in ("student_depth", "filter_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"method.{name} must be >= 1, got {value}.")
        if self.head_dropout is not None and not 0 <= self.head_dropout < 1:
            raise ConfigError(f"method.head_dropout must be in [0, 1), got {self.head_dropout}.")
        if self.side == "teacher" and isinstance(self.layer_map, str) and self.student_depth is None:
            raise ConfigError(
                f"method.side=teacher with method.layer_map={self.layer_map} needs method.student_depth "
                "(the student's layer count K), or give method.layer_map as an explicit list."
            )

    @classmethod
    def tiny(cls) -> TEDFiltersConfig:
        """The student's filters over the uniform map."""
        return cls(layer_map="uniform")

    def check_run(self, run: RunView) -> None:
        """A labelled task, and ``eval.select=last``: the frozen model scores the same at every evaluation."""
        require_labels("ted_filters", run)
        if run.eval_select != "last":
            raise ConfigError(
                "Method 'ted_filters' trains filters on a frozen model, so every evaluation of the model "
                "scores the same and selecting the best checkpoint would export the filters of the first "
                "evaluation: set eval.select=last."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "uses no teacher outputs (the model it filters is frozen)"


class TEDFilters(Method):
    """Stage I: filters and their task heads trained on a frozen model; mean task loss over the filters."""

    name: ClassVar[str] = "ted_filters"
    Config: ClassVar[type[TEDFiltersConfig]] = TEDFiltersConfig
    uses_teacher: ClassVar[bool] = True  # loaded for its width d_f and depth (the layer map); not run
    card: ClassVar[str] = "ted"

    def __init__(self, cfg: TEDFiltersConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg, self.is_regression = cfg, ctx.is_regression
        model = ctx.student
        # The backbone is frozen (only filters and their heads train); it stays in train() mode in the
        # loop, so its dropout is active, as in the released code.
        model.requires_grad_(False)
        layers = self._filtered_layers(model, ctx.teacher)
        hidden = int(model.config.hidden_size)
        side_out = hidden if cfg.side == "teacher" else int(ctx.teacher.config.hidden_size)
        dim = cfg.filter_dim or side_out
        self.filters = LayerProjections(layers, hidden, dim, cfg.filter_type, activation_of(model.config))
        self.heads = filter_heads(model, layers, dim, ctx.num_labels, cfg.head_dropout, cfg.pooling)
        self.kind = head_kind(model)
        # What a head that reads nothing from its layer scores: the loss of predicting the labels' prior.
        self.prior = LabelPrior(self.kind, ctx.is_regression, ctx.num_labels)
        self._recent: dict[int, Tensor] = {}  # each filter's loss, a running mean kept on the device

    def _filtered_layers(self, model: PreTrainedModel, teacher: PreTrainedModel) -> list[int]:
        depth = num_layers(model.config)
        if self.cfg.side == "student":
            # Check now that the map will fit Stage II; the student's filters sit on all its layers.
            resolve_layer_map(self.cfg.layer_map, num_layers(teacher.config), depth)
            return list(range(1, depth + 1))
        k = self.cfg.student_depth or len(self.cfg.layer_map)
        return list(dict.fromkeys(resolve_layer_map(self.cfg.layer_map, depth, k)))

    def student_request(self) -> FeatureRequest:
        """Hidden states only."""
        return FeatureRequest(logits=False, hidden_states=True)

    def teacher_request(self) -> FeatureRequest | None:
        """Nothing: Stage I runs no teacher."""
        return None

    def trainable_modules(self) -> nn.ModuleDict:
        """The filters and their heads; saved as ``method.safetensors`` for Stage II."""
        return nn.ModuleDict({"filters": self.filters, "heads": self.heads})

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Mean task loss of the filter heads; each filter's loss is logged as ``filter_<layer>``."""
        assert student.hidden_states is not None and batch.labels is not None
        parts: dict[str, Tensor] = {}
        logits = None
        for n, out in zip(self.filters.layers, self.filters(student.hidden_states), strict=True):
            logits = self.heads[f"layer_{n}"](out, student.attention_mask, student.causal)
            parts[f"filter_{n}"] = task_loss(logits, batch.labels, self.is_regression)
        total = torch.stack(list(parts.values())).mean()
        with torch.no_grad():
            assert logits is not None
            self.prior.update(batch.labels, logits)
            for n in self.filters.layers:
                value = parts[f"filter_{n}"].detach().float()
                self._recent[n] = value if n not in self._recent else 0.9 * self._recent[n] + 0.1 * value
        return LossOutput(total=total, parts=parts)

    def evaluation_models(self, student: PreTrainedModel) -> dict[str, nn.Module]:
        """Each filter with its head, scored like a model: ``eval/filter_<layer>/<metric>``."""
        return {f"filter_{n}": _FilterModel(student, self, n) for n in dict.fromkeys(self.filters.layers)}

    def chance_loss(self) -> float | None:
        """The loss of predicting the training labels' prior (`LabelPrior`); ``None`` before any label."""
        return self.prior.chance()

    def end_notes(self) -> list[str]:
        """A warning for every filter whose loss ended at chance (within 5 % of the prior's loss)."""
        chance = self.chance_loss()
        if chance is None or chance <= 0:
            return []
        notes = []
        for n, value in sorted(self._recent.items()):
            loss = float(value)
            if loss >= 0.95 * chance:
                notes.append(
                    f"{CHANCE_NOTE}{n} ended at chance-level loss ({loss:.3f}; {self.prior.what} scores "
                    f"{chance:.3f}): it learned nothing from that layer. Raise this stage's learning "
                    "rate (train.lr, or plan.teacher_lr for the teacher's stages) or its epochs and redo it."
                )
        return notes


class _FilterModel(nn.Module):
    """One filter and its head on the frozen model, called like the model itself for evaluation."""

    def __init__(self, model: PreTrainedModel, method: TEDFilters, layer: int) -> None:
        super().__init__()
        # Submodules, so that eval() reaches the filter and its head (dropout) as well as the model.
        self.model = model
        self.filter = method.filters.maps[f"layer_{layer}"]
        self.head = method.heads[f"layer_{layer}"]
        self.request, self.kind, self.layer = method.student_request(), method.kind, layer
        self.config = model.config

    def forward(self, **inputs: Tensor) -> ModelOutput:
        features = forward_features(self.model, Batch.from_mapping(inputs), self.request)
        assert features.hidden_states is not None
        filtered = self.filter(features.hidden_states[self.layer])
        logits = self.head(filtered, features.attention_mask, features.causal)
        if self.kind == "qa":  # [B, 2, S] -> start and end scores
            return QuestionAnsweringModelOutput(start_logits=logits[:, 0], end_logits=logits[:, 1])
        if self.kind == "lm":
            return CausalLMOutput(logits=logits)
        return SequenceClassifierOutput(logits=logits)
