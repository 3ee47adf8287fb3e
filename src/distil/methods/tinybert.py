"""TinyBERT-style distillation (Jiao et al., Findings of EMNLP 2020, arXiv:1909.10351).

Transformer-layer distillation: student layer ``m`` learns teacher layer ``g(m) = m * N / M`` (uniform
map, 1-indexed; the embeddings 0 -> 0) through the MSE of pre-softmax attention scores (handed over by
the attention computation itself, `distil.adapters.scores`; rebuilt from captured Q and K for a family
whose attention does not allow it) and of hidden states mapped by a learned projection ``d_s -> d_t``.
This method is that layer stage: *general* distillation on a corpus, or *intermediate* distillation on a
labelled task. The prediction-layer stage is `distil.methods.tinybert_prediction`; on a labelled task the
``tinybert`` plan (`distil.plans.tinybert`) runs one after the other. Settings and choices:
``docs/methods/tinybert.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from distil.errors import ConfigError
from distil.losses import attention_score_mse, attention_scores
from distil.losses.hidden import hidden_mse
from distil.methods.base import Method, MethodContext
from distil.models.families import family_of, num_layers
from distil.models.layer_maps import uniform_layer_map
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["TinyBERT", "TinyBERTConfig"]

# The scores the attention hands over are the model's own, rotary positions and soft-capping included.
# Rebuilt from captured Q and K (DeBERTa-v2, whose attention is computed in its module), Q K^T / sqrt(d) is
# the content-to-content term only (its relative-position terms are left out).


@dataclass
class TinyBERTConfig:
    """TinyBERT-style layer-distillation settings.

    Attributes:
        projection: ``shared``: one ``d_s -> d_t`` map for the embeddings and every layer (the released
            general-distillation student); ``per_layer``: one map per student layer and the embeddings.
        attention_weight: Weight of the attention-score MSE (summed over layers; 0 turns it off).
        hidden_weight: Weight of the hidden-state MSE (summed over layers).
        embedding_weight: Weight of the embedding-output MSE.
    """

    projection: Literal["shared", "per_layer"] = "shared"
    attention_weight: float = 1.0
    hidden_weight: float = 1.0
    embedding_weight: float = 1.0

    def __post_init__(self) -> None:
        weights = ("attention_weight", "hidden_weight", "embedding_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if not sum(getattr(self, n) for n in weights) > 0:
            raise ConfigError(f"method.{', '.join(weights)} are all 0: the layer stage has nothing to train.")

    name: ClassVar[str] = "tinybert"

    @classmethod
    def tiny(cls) -> TinyBERTConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """Any task; the teacher's hidden states are needed every step."""

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's hidden states and attention scores"


def _scores(features: Features, layer: int) -> Tensor:
    """The pre-softmax scores of ``layer``: as the attention computed them, else rebuilt from Q and K."""
    if layer in features.scores:
        return features.scores[layer]
    qkv = features.qkv[layer]
    return attention_scores(qkv.query, qkv.key, qkv.num_heads, qkv.num_kv_heads)


def _score_request(model: PreTrainedModel, layers: tuple[int, ...]) -> FeatureRequest:
    """Hidden states, and scores handed over by the attention where the family allows it, else Q and K."""
    if family_of(model).attention_interface:
        return FeatureRequest(logits=False, hidden_states=True, score_layers=layers)
    return FeatureRequest(logits=False, hidden_states=True, qkv_layers=layers)


class TinyBERT(Method):
    """Attention-score + hidden-state + embedding MSE over the uniform layer map."""

    name: ClassVar[str] = "tinybert"
    Config: ClassVar[type[TinyBERTConfig]] = TinyBERTConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "tinybert"

    def __init__(self, cfg: TinyBERTConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.student, self.teacher = ctx.student, ctx.teacher
        self.modules = nn.ModuleDict()
        self.layer_map = uniform_layer_map(num_layers(ctx.teacher.config), num_layers(ctx.student.config))
        if cfg.attention_weight > 0:
            self._check_attention(ctx)
        self._build_projections(ctx)

    @staticmethod
    def _check_attention(ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        heads = {
            side: int(m.config.num_attention_heads)
            for side, m in (("student", ctx.student), ("teacher", ctx.teacher))
        }
        if heads["student"] != heads["teacher"]:
            raise ConfigError(
                f"TinyBERT's attention loss compares attention heads one to one, but the student has "
                f"{heads['student']} and the teacher {heads['teacher']}. Give the student "
                f"{heads['teacher']} heads (models.student.num_heads), set method.attention_weight=0, or use "
                "MiniLMv2 (method minilmv2), whose relation heads lift the restriction."
            )
        for side, model in (("student", ctx.student), ("teacher", ctx.teacher)):
            family = str(model.config.model_type)
            if family_of(model).rotary and not family_of(model).attention_interface:
                raise ConfigError(
                    "TinyBERT's attention loss would recompute pre-softmax scores from captured Q and K, "
                    f"which for the {side}'s family {family!r} precede the rotary position embedding, so "
                    "the scores would not be the model's. Set method.attention_weight=0 (hidden-state and "
                    "embedding losses only) or use MiniLMv2 (method minilmv2)."
                )

    def _build_projections(self, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        d_s, d_t = int(ctx.student.config.hidden_size), int(ctx.teacher.config.hidden_size)
        count = 1 if self.cfg.projection == "shared" else len(self.layer_map) + 1
        linears = [nn.Linear(d_s, d_t) for _ in range(count)]
        if d_s == d_t:
            # Our choice (TinyBERT starts every fit_dense at random): a student copied from teacher layers
            # then starts from its natural alignment instead of being scrambled by a random map.
            with torch.no_grad():
                for linear in linears:
                    linear.weight.copy_(torch.eye(d_t))
                    linear.bias.zero_()
        self.maps = linears
        self.modules["projection"] = nn.ModuleList(linears)

    def _project(self, index: int, hidden: Tensor) -> Tensor:
        linear = self.maps[0 if self.cfg.projection == "shared" else index]
        return linear(hidden)

    def student_request(self) -> FeatureRequest:
        """Hidden states and every layer's attention scores."""
        layers = tuple(range(len(self.layer_map))) if self.cfg.attention_weight > 0 else ()
        return _score_request(self.student, layers)

    def teacher_request(self) -> FeatureRequest | None:
        """Hidden states and the attention scores of the mapped layers."""
        layers = tuple(g - 1 for g in self.layer_map) if self.cfg.attention_weight > 0 else ()
        return _score_request(self.teacher, layers)

    def trainable_modules(self) -> nn.ModuleDict:
        """The projection(s) ``d_s -> d_t``."""
        return self.modules

    def _layer_losses(self, student: Features, teacher: Features) -> dict[str, Tensor]:
        c, mask = self.cfg, student.attention_mask
        assert student.hidden_states is not None and teacher.hidden_states is not None
        parts: dict[str, Tensor] = {}
        if c.attention_weight > 0:
            parts["attention"] = torch.stack(
                [
                    attention_score_mse(
                        _scores(student, m - 1), _scores(teacher, g - 1), mask, causal=student.causal
                    )
                    for m, g in enumerate(self.layer_map, start=1)
                ]
            ).sum()
        if c.hidden_weight > 0:
            parts["hidden"] = torch.stack(
                [
                    hidden_mse(self._project(m, student.hidden_states[m]), teacher.hidden_states[g], mask)
                    for m, g in enumerate(self.layer_map, start=1)
                ]
            ).sum()
        if c.embedding_weight > 0:
            parts["embedding"] = hidden_mse(
                self._project(0, student.hidden_states[0]), teacher.hidden_states[0], mask
            )
        return parts

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Weighted sum of the summed-over-layers MSEs."""
        assert teacher is not None
        parts = self._layer_losses(student, teacher)
        weight = {
            "attention": self.cfg.attention_weight,
            "hidden": self.cfg.hidden_weight,
            "embedding": self.cfg.embedding_weight,
        }
        total = sum(weight[name] * value for name, value in parts.items())
        return LossOutput(total=total, parts=parts)  # type: ignore[arg-type]
