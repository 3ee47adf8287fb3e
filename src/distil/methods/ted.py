"""TED: task-aware layer-wise distillation (Liang et al., ICML 2023, https://arxiv.org/abs/2210.01351).

Stage II: the student and its task-aware filters are trained so that ``g_s^k(H_s^k)`` matches the frozen
teacher's ``g_t^{M(k)}(H_t^{M(k)})``, beside the task loss and logit KD. The filters come from Stage I
(`distil.methods.ted_filters`, learned on each frozen model), and Stage 0 fine-tunes both models first;
the ``ted`` plan (`distil.plans.ted`) runs every stage as ordinary runs of the shared loop. Tasks:
classification and regression, extractive QA (KL on start and end scores) and causal LM (token-level KL
over positions with a next token).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from transformers import PretrainedConfig

from distil.adapters.projections import LayerProjections, activation_of, load_projections
from distil.errors import ConfigError
from distil.losses import kd_kl, soft_target_mask, task_loss
from distil.losses.hidden import mapped_hidden_mse
from distil.methods.base import Method, MethodContext, require_labels
from distil.models.families import num_layers
from distil.models.layer_maps import resolve_layer_map
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["TED", "TEDConfig", "layer_map"]


def layer_map(teacher_layers: int, student_layers: int, scheme: str | list[int] = "paper") -> list[int]:
    """The 1-indexed teacher layer ``M(k)`` for each student layer (``"paper"``, ``"uniform"`` or a list).

    12 -> 6 gives ``[1, 3, 5, 8, 10, 12]`` with ``"paper"``; see `distil.models.layer_maps.resolve_layer_map`.
    """
    return resolve_layer_map(scheme, teacher_layers, student_layers)


@dataclass
class TEDConfig:
    """TED Stage II settings (defaults: the released scripts' SST-2 row, see docs/methods/ted.md).

    Attributes:
        layer_map: ``paper`` (M(k) = 2k-1 for k <= K/2, else 2k), ``uniform`` (k * L / K) or an explicit
            list of K 1-indexed teacher layers.
        filter_type: ``linear`` (released default) or ``mlp`` (Linear-act-Linear, ``filter_nonlinear``).
        filter_dim: Filter output size d_f on both sides (default: the teacher's hidden size).
        kl_alpha: Weight of ``T^2 * KL(teacher || student)`` on the logits. Identically zero for
            regression (one logit), as in the released code. QA: mean of the start and end KLs;
            causal LM: mean over the positions that have a next token.
        mse_alpha: Weight of the filter MSE (mean over the K layer pairs).
        temperature: KD temperature T (hard-coded 2 in the released code).
        mask_padding: Average the filter MSE over real tokens only. Off by default: the released code
            averages over every element, padding included, and its ``mse_alpha`` values assume that.
        teacher_filters: The teacher's Stage-I filters (a ``method.safetensors`` file or the folder
            holding it). Unset: random frozen filters, unless the ``ted`` plan learns them first (it
            does, and skips that stage when this is set).
        student_filters: Initial student filters, same form; unset: random (or learned by the plan).
    """

    layer_map: Literal["paper", "uniform"] | list[int] = "paper"
    filter_type: Literal["linear", "mlp"] = "linear"
    filter_dim: int | None = None
    kl_alpha: float = 20.0
    mse_alpha: float = 20.0
    temperature: float = 2.0
    mask_padding: bool = False
    teacher_filters: str | None = None
    student_filters: str | None = None

    name: ClassVar[str] = "ted"

    def __post_init__(self) -> None:
        if self.filter_dim is not None and self.filter_dim < 1:
            raise ConfigError(f"method.filter_dim must be >= 1, got {self.filter_dim}.")
        for name in ("kl_alpha", "mse_alpha"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")

    @classmethod
    def tiny(cls) -> TEDConfig:
        """One Stage-II run with random filters on both sides (no plan, no files)."""
        return cls(layer_map="uniform")

    def check_run(self, run: RunView) -> None:
        """A labelled task (task loss and KL), and the teacher's hidden states every step."""
        require_labels("ted", run)

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's hidden states"


def _hidden(config: PretrainedConfig) -> int:
    return int(config.hidden_size)


class TED(Method):
    """Stage II: filtered hidden-state MSE against frozen teacher filters, plus task loss and KD."""

    name: ClassVar[str] = "ted"
    Config: ClassVar[type[TEDConfig]] = TEDConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "ted"

    def __init__(self, cfg: TEDConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg, self.is_regression = cfg, ctx.is_regression
        depth_t, depth_s = num_layers(ctx.teacher.config), num_layers(ctx.student.config)
        self.map = resolve_layer_map(cfg.layer_map, depth_t, depth_s)
        dim = cfg.filter_dim or _hidden(ctx.teacher.config)
        kind = cfg.filter_type
        t_act, s_act = activation_of(ctx.teacher.config), activation_of(ctx.student.config)
        self.teacher_filters = LayerProjections(self.map, _hidden(ctx.teacher.config), dim, kind, t_act)
        self.filters = LayerProjections(range(1, depth_s + 1), _hidden(ctx.student.config), dim, kind, s_act)
        if cfg.teacher_filters:
            load_projections(self.teacher_filters, cfg.teacher_filters, "filters.", "method.teacher_filters")
        else:
            warnings.warn(
                "TED Stage II without method.teacher_filters: the teacher's filters are random and frozen.",
                stacklevel=2,
            )
        if cfg.student_filters:
            load_projections(self.filters, cfg.student_filters, "filters.", "method.student_filters")
        # Frozen and outside trainable_modules: the optimiser never sees the teacher's filters.
        self.teacher_filters.requires_grad_(False).eval()

    def student_request(self) -> FeatureRequest:
        """Logits and hidden states."""
        return FeatureRequest(logits=True, hidden_states=True)

    def teacher_request(self) -> FeatureRequest | None:
        """Logits and hidden states."""
        return FeatureRequest(logits=True, hidden_states=True)

    def trainable_modules(self) -> nn.ModuleDict:
        """The student's filters; saved as ``method.safetensors``."""
        return nn.ModuleDict({"filters": self.filters})

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Task + kl_alpha * KL + mse_alpha * mean_k MSE(g_s^k(H_s^k), g_t^M(k)(H_t^M(k)))."""
        assert student.hidden_states is not None and batch.labels is not None
        assert teacher is not None and teacher.hidden_states is not None
        assert student.logits is not None and teacher.logits is not None
        task = task_loss(student.logits, batch.labels, self.is_regression)
        # One logit (regression) gives softmax == 1 on both sides, so this KL is exactly 0 (gotcha 6).
        # QA: start and end rows, no padding mask (released); LM: positions that have a next token.
        mask = soft_target_mask(batch.labels, student.logits)
        kl = kd_kl(student.logits, teacher.logits, self.cfg.temperature, mask)
        with torch.no_grad():
            self.teacher_filters.to(teacher.hidden_states[0].device)
            targets = self.teacher_filters(teacher.hidden_states)
        real = student.attention_mask if self.cfg.mask_padding else None
        mse = mapped_hidden_mse(self.filters(student.hidden_states), targets, real)
        total = task + self.cfg.kl_alpha * kl + self.cfg.mse_alpha * mse
        return LossOutput(total=total, parts={"task": task, "kl": kl, "filter_mse": mse})
