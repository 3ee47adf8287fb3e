"""TinyBERT-style distillation (Jiao et al., Findings of EMNLP 2020, arXiv:1909.10351).

Transformer-layer distillation: student layer ``m`` learns teacher layer ``g(m) = m * N / M`` (uniform
map, 1-indexed; the embeddings 0 -> 0) through the MSE of pre-softmax attention scores (recomputed from
captured Q and K) and of hidden states mapped by a learned projection ``d_s -> d_t``; prediction-layer
distillation is a soft cross-entropy on the logits. The stages are ordinary runs of the shared loop:

- ``general``: attention + hidden + embedding losses, on a corpus (the default there);
- ``intermediate``: the same losses on the labelled task;
- ``prediction``: soft cross-entropy on the task logits.

On a labelled task ``method.stage=null`` (the default) runs ``intermediate`` then ``prediction``
(`TinyBERT.stage_plan`). Settings and choices: ``docs/methods/tinybert.md``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from distil.config import RunConfig, StudentConfig
from distil.errors import ConfigError
from distil.losses import attention_score_mse, attention_scores, logit_mse, soft_cross_entropy
from distil.losses.hidden import hidden_mse
from distil.methods.base import MethodContext
from distil.models.architectures import num_layers
from distil.models.students import uniform_layer_map
from distil.training.stages import stage_dir
from distil.types import QKV, FeatureRequest, Features, LossOutput

__all__ = ["TinyBERT", "TinyBERTConfig"]

Stage = Literal["general", "intermediate", "prediction"]

# Families whose Q K^T / sqrt(d) (Q, K as captured) is the score the model itself uses. DeBERTa-v2 is
# included for its content-to-content term only (its relative-position terms are left out); rotary
# families (Llama, Mistral, Qwen2) are not, since Q and K are captured before the rotation.
_SCORE_FAMILIES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "distilbert", "gpt2", "deberta-v2"})


@dataclass
class TinyBERTConfig:
    """TinyBERT-style settings.

    Attributes:
        stage: ``general`` (corpus), ``intermediate`` or ``prediction`` (labelled task); ``null`` runs
            ``general`` on a corpus and ``intermediate`` then ``prediction`` on a labelled task.
        projection: ``shared``: one ``d_s -> d_t`` map for the embeddings and every layer (the released
            general-distillation student); ``per_layer``: one map per student layer and the embeddings.
        temperature: Softmax temperature ``t`` of the prediction-layer soft cross-entropy (paper: 1).
        attention_weight: Weight of the attention-score MSE (summed over layers; 0 turns it off).
        hidden_weight: Weight of the hidden-state MSE (summed over layers).
        embedding_weight: Weight of the embedding-output MSE.
    """

    stage: Stage | None = None
    projection: Literal["shared", "per_layer"] = "shared"
    temperature: float = 1.0
    attention_weight: float = 1.0
    hidden_weight: float = 1.0
    embedding_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")
        weights = ("attention_weight", "hidden_weight", "embedding_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if self.stage != "prediction" and not sum(getattr(self, n) for n in weights) > 0:
            raise ConfigError(
                f"method.{', '.join(weights)} are all 0: the layer stages have nothing to train."
            )

    @classmethod
    def tiny(cls) -> TinyBERTConfig:
        """Settings for fast generic tests: one task-specific stage (intermediate-layer distillation)."""
        return cls(stage="intermediate")


def _scores(qkv: QKV) -> Tensor:
    return attention_scores(qkv.query, qkv.key, qkv.num_heads, qkv.num_kv_heads)


class TinyBERT:
    """Attention-score + hidden-state + embedding MSE (layer stages), or soft cross-entropy (prediction)."""

    name: ClassVar[str] = "tinybert"
    Config: ClassVar[type[TinyBERTConfig]] = TinyBERTConfig
    uses_teacher: ClassVar[bool] = True

    def __init__(self, cfg: TinyBERTConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.is_regression = ctx.is_regression
        corpus = ctx.num_labels == 0
        if cfg.stage is None and not corpus:
            raise ConfigError(
                "method.stage=null on a labelled task runs the intermediate and prediction stages one after "
                "the other through distil.training.loop.train; to build a single stage set method.stage."
            )
        self.stage: Stage = cfg.stage or "general"
        if self.stage == "prediction" and corpus:
            raise ConfigError(
                "method.stage=prediction distils task logits and needs a labelled task, not a corpus."
            )
        self.modules = nn.ModuleDict()
        self.layer_map: list[int] = []
        if self.stage != "prediction":
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
            if family not in _SCORE_FAMILIES:
                raise ConfigError(
                    "TinyBERT's attention loss recomputes pre-softmax scores from captured Q and K, which "
                    f"for the {side}'s family {family!r} precede the rotary position embedding, so the "
                    "scores would not be the model's. Set method.attention_weight=0 (hidden-state and "
                    "embedding losses only) or use MiniLMv2 (method minilmv2)."
                )

    def _build_projections(self, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        d_s, d_t = int(ctx.student.config.hidden_size), int(ctx.teacher.config.hidden_size)
        count = 1 if self.cfg.projection == "shared" else len(self.layer_map) + 1
        maps = nn.ModuleList(nn.Linear(d_s, d_t) for _ in range(count))
        if d_s == d_t:
            # Our choice (TinyBERT starts every fit_dense at random): a student copied from teacher layers
            # then starts from its natural alignment instead of being scrambled by a random map.
            with torch.no_grad():
                for linear in maps:
                    linear.weight.copy_(torch.eye(d_t))
                    linear.bias.zero_()
        self.modules["projection"] = maps

    def _project(self, index: int, hidden: Tensor) -> Tensor:
        maps = self.modules["projection"]
        return maps[0 if self.cfg.projection == "shared" else index](hidden)  # type: ignore[index]

    @classmethod
    def stage_plan(cls, cfg: RunConfig) -> list[tuple[str, RunConfig]]:
        """``intermediate`` then ``prediction`` on a labelled task with ``method.stage=null``, else none.

        The prediction stage starts from the intermediate stage's exported student. The intermediate
        stage exports its last student (``eval.select=last``): its classifier is untrained, so its dev
        score cannot choose a checkpoint. Both stages use the run's ``train`` settings.
        """
        if cfg.method.stage is not None or cfg.data.task == "corpus":
            return []
        inter = copy.deepcopy(cfg)
        inter.method = dataclasses.replace(cfg.method, stage="intermediate")
        inter.eval.select = "last"
        pred = copy.deepcopy(cfg)
        pred.method = dataclasses.replace(cfg.method, stage="prediction")
        student = stage_dir(cfg.run_dir, "intermediate") / "student"
        pred.models.student = StudentConfig(init="pretrained", path=str(student))
        return [("intermediate", inter), ("prediction", pred)]

    def student_request(self) -> FeatureRequest:
        """Logits (prediction stage), or hidden states and every layer's Q/K (layer stages)."""
        if self.stage == "prediction":
            return FeatureRequest(logits=True)
        qkv = tuple(range(len(self.layer_map))) if self.cfg.attention_weight > 0 else ()
        return FeatureRequest(logits=False, hidden_states=True, qkv_layers=qkv)

    def teacher_request(self) -> FeatureRequest | None:
        """Logits (prediction stage, cacheable), or hidden states and the Q/K of the mapped layers."""
        if self.stage == "prediction":
            return FeatureRequest(logits=True)
        qkv = tuple(g - 1 for g in self.layer_map) if self.cfg.attention_weight > 0 else ()
        return FeatureRequest(logits=False, hidden_states=True, qkv_layers=qkv)

    def trainable_modules(self) -> nn.ModuleDict:
        """The projection(s) ``d_s -> d_t`` of the layer stages (empty for the prediction stage)."""
        return self.modules

    def _layer_losses(self, student: Features, teacher: Features) -> dict[str, Tensor]:
        c, mask = self.cfg, student.attention_mask
        assert student.hidden_states is not None and teacher.hidden_states is not None
        parts: dict[str, Tensor] = {}
        if c.attention_weight > 0:
            parts["attention"] = torch.stack(
                [
                    attention_score_mse(
                        _scores(student.qkv[m - 1]), _scores(teacher.qkv[g - 1]), mask, causal=student.causal
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

    def loss(self, batch: dict[str, Any], student: Features, teacher: Features | None) -> LossOutput:
        """Layer stages: weighted sum of the summed-over-layers MSEs; prediction: the soft cross-entropy."""
        assert teacher is not None
        if self.stage == "prediction":
            assert student.logits is not None and teacher.logits is not None
            if self.is_regression:  # TinyBERT's task_distill uses MSE for regression tasks
                pred = logit_mse(student.logits, teacher.logits)
            else:
                pred = soft_cross_entropy(student.logits, teacher.logits, self.cfg.temperature)
            return LossOutput(total=pred, parts={"prediction": pred})
        parts = self._layer_losses(student, teacher)
        weight = {
            "attention": self.cfg.attention_weight,
            "hidden": self.cfg.hidden_weight,
            "embedding": self.cfg.embedding_weight,
        }
        total = sum(weight[name] * value for name, value in parts.items())
        return LossOutput(total=total, parts=parts)  # type: ignore[arg-type]
