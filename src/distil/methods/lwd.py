"""LWD: layer-wise distillation, the baseline of the TED paper (Liang et al., ICML 2023).

Each student layer ``k`` is mapped by a learned, randomly initialised projection ``W_k: d_s -> d_t`` onto
the raw hidden states of teacher layer ``M(k)`` (the embedding output excluded; the teacher gets no
projection), beside the task loss and logit KD:

    loss = task + kl_alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))
           + mse_alpha * (1/K) sum_k MSE(H_s^k W_k, H_t^{M(k)})

This is TED's Stage II with the teacher filters replaced by the identity and the student filters by
``W_k``; both use `distil.losses.hidden`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from distil.adapters.projections import LayerProjections
from distil.errors import ConfigError
from distil.losses import kd_kl, soft_target_mask, task_loss
from distil.losses.hidden import mapped_hidden_mse
from distil.methods.base import Method, MethodContext, require_labels
from distil.models.families import num_layers
from distil.models.layer_maps import resolve_layer_map
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["LWD", "LWDConfig"]


@dataclass
class LWDConfig:
    """LWD settings (defaults: the released scripts' SST-2 row, see docs/methods/lwd.md).

    Attributes:
        layer_map: ``paper`` (M(k) = 2k-1 for k <= K/2, else 2k), ``uniform`` (k * L / K) or an explicit
            list of K 1-indexed teacher layers.
        kl_alpha: Weight of ``T^2 * KL(teacher || student)`` on the logits; identically zero for
            regression (one logit), as in the released code.
        mse_alpha: Weight of the hidden-state MSE (mean over the K layer pairs).
        temperature: KD temperature T (hard-coded 2 in the released code).
        mask_padding: Average the MSE over real tokens only. Off by default: the released code averages
            over every element, padding included.
    """

    layer_map: Literal["paper", "uniform"] | list[int] = "paper"
    kl_alpha: float = 20.0
    mse_alpha: float = 20.0
    temperature: float = 2.0
    mask_padding: bool = False

    def __post_init__(self) -> None:
        for name in ("kl_alpha", "mse_alpha"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")

    name: ClassVar[str] = "lwd"

    @classmethod
    def tiny(cls) -> LWDConfig:
        """Settings for fast generic tests (the uniform map fits any student no deeper than its teacher)."""
        return cls(layer_map="uniform")

    def check_run(self, run: RunView) -> None:
        """A labelled task (its task term), and the teacher's hidden states every step."""
        require_labels("lwd", run)

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's hidden states"


class LWD(Method):
    """Learned student projections matched to raw teacher hidden states, plus task loss and logit KD."""

    name: ClassVar[str] = "lwd"
    Config: ClassVar[type[LWDConfig]] = LWDConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "lwd"

    def __init__(self, cfg: LWDConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg, self.is_regression = cfg, ctx.is_regression
        depth_s = num_layers(ctx.student.config)
        self.map = resolve_layer_map(cfg.layer_map, num_layers(ctx.teacher.config), depth_s)
        d_s, d_t = int(ctx.student.config.hidden_size), int(ctx.teacher.config.hidden_size)
        # Forced to the teacher's width even when d_s == d_t, as in the released code (a learned map).
        self.projections = LayerProjections(range(1, depth_s + 1), d_s, d_t)

    def student_request(self) -> FeatureRequest:
        """Logits and hidden states."""
        return FeatureRequest(logits=True, hidden_states=True)

    def teacher_request(self) -> FeatureRequest | None:
        """Logits and hidden states."""
        return FeatureRequest(logits=True, hidden_states=True)

    def trainable_modules(self) -> nn.ModuleDict:
        """The student projections; saved as ``method.safetensors``."""
        return nn.ModuleDict({"projections": self.projections})

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Task + kl_alpha * KL + mse_alpha * mean_k MSE(projected student layer k, teacher layer M(k))."""
        assert teacher is not None and teacher.hidden_states is not None and teacher.logits is not None
        assert student.hidden_states is not None and student.logits is not None and batch.labels is not None
        task = task_loss(student.logits, batch.labels, self.is_regression)
        # QA: start and end rows; causal LM: positions that have a next token (as TED's Stage II).
        mask = soft_target_mask(batch.labels, student.logits)
        kl = kd_kl(student.logits, teacher.logits, self.cfg.temperature, mask)
        targets = [teacher.hidden_states[m] for m in self.map]
        mask = student.attention_mask if self.cfg.mask_padding else None
        mse = mapped_hidden_mse(self.projections(student.hidden_states), targets, mask)
        total = task + self.cfg.kl_alpha * kl + self.cfg.mse_alpha * mse
        return LossOutput(total=total, parts={"task": task, "kl": kl, "hidden_mse": mse})
