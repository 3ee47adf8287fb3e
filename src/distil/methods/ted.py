"""TED: task-aware layer-wise distillation (Liang et al., ICML 2023, https://arxiv.org/abs/2210.01351).

Task-aware *filters* g (per-token maps on hidden states) are first learned on each frozen model so that
they keep only task-relevant information (Stage I); then the student and its filters are trained so
that ``g_s^k(H_s^k)`` matches the frozen teacher's ``g_t^{M(k)}(H_t^{M(k)})``, beside the task loss and
logit KD (Stage II). Stage 0 fine-tunes both models on the task first. ``method.stage=all`` runs the
whole plan as ordinary runs of the shared loop (`distil.methods._ted_plan`); each stage also runs alone.
Tasks: classification and regression, extractive QA (SQuAD; per-filter start/end heads, KL on start and
end scores) and causal LM (per-filter LM heads, token-level KL over positions with a next token); the
Stage-I heads are in `distil.methods._ted_heads`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.adapters.projections import LayerProjections, activation_of, load_projections
from distil.errors import ConfigError
from distil.losses import kd_kl, task_loss
from distil.losses.hidden import mapped_hidden_mse, resolve_layer_map
from distil.methods._ted_heads import filter_heads
from distil.methods.base import MethodContext
from distil.methods.kd import soft_target_mask
from distil.models.architectures import num_layers
from distil.types import FeatureRequest, Features, LossOutput

if TYPE_CHECKING:
    from distil.config import RunConfig

__all__ = ["TED", "TEDConfig", "layer_map"]


def layer_map(teacher_layers: int, student_layers: int, scheme: str | list[int] = "paper") -> list[int]:
    """The 1-indexed teacher layer ``M(k)`` for each student layer (``"paper"``, ``"uniform"`` or a list).

    12 -> 6 gives ``[1, 3, 5, 8, 10, 12]`` with ``"paper"``; see `distil.losses.hidden.resolve_layer_map`.
    """
    return resolve_layer_map(scheme, teacher_layers, student_layers)


@dataclass
class TEDConfig:
    """TED settings (defaults: the released scripts' SST-2 row, see docs/methods/ted.md).

    Attributes:
        stage: ``all``: Stage 0 (as enabled below), Stage I for teacher and student, Stage II, each in
            ``RUN_DIR/stages/<name>``; ``finetune``: Stage 0 only; ``filters``: one Stage-I run on the
            run's student (the model whose filters are learned, frozen); ``distill``: one Stage-II run.
        side: For ``stage: filters``: whose filters are learned. ``teacher``: the run's student *is* the
            teacher checkpoint (filters on layers ``M(k)``); ``student``: filters on layers ``1..K``.
        layer_map: ``paper`` (M(k) = 2k-1 for k <= K/2, else 2k), ``uniform`` (k * L / K) or an explicit
            list of K 1-indexed teacher layers.
        student_depth: Student depth K, needed only by ``side: teacher`` with a named ``layer_map``.
        filter_type: ``linear`` (released default) or ``mlp`` (Linear-act-Linear, ``filter_nonlinear``).
        filter_dim: Filter output size d_f on both sides (default: the teacher's hidden size).
        head_dropout: Dropout of the Stage-I classification heads (default: the model's classifier
            dropout); QA and LM heads are single linear maps without dropout.
        kl_alpha: Weight of ``T^2 * KL(teacher || student)`` on the logits in Stage II. Identically zero
            for regression (one logit), as in the released code. QA: mean of the start and end KLs;
            causal LM: mean over the positions that have a next token.
        mse_alpha: Weight of the filter MSE (mean over the K layer pairs) in Stage II.
        temperature: KD temperature T (hard-coded 2 in the released code).
        mask_padding: Average the filter MSE over real tokens only. Off by default: the released code
            averages over every element, padding included, and its ``mse_alpha`` values assume that.
        finetune_teacher: Stage 0 for the teacher: fine-tune ``models.teacher`` first. Off: it is already
            fine-tuned on the task.
        finetune_student: Stage 0 for the student (the paper's choice; it helps the student filters).
        teacher_lr: Learning rate of the teacher's stages (fine-tuning, filters); default ``train.lr``.
        teacher_batch_size: Batch size of the teacher's stages; default ``train.batch_size``.
        teacher_epochs: Epochs of the teacher's stages; default ``train.epochs``.
        teacher_warmup_ratio: Warm-up ratio of the teacher's stages; default ``train.warmup_ratio``.
        teacher_filters: Stage II: the teacher's Stage-I filters (a ``method.safetensors`` file or the
            folder holding it). Unset: random frozen filters (only sensible in tests). With
            ``stage: all``, set it to skip the teacher's Stage I.
        student_filters: Stage II: initial student filters, same form; unset: random. With ``stage:
            all``, set it to skip the student's Stage I.
    """

    stage: Literal["all", "finetune", "filters", "distill"] = "all"
    side: Literal["teacher", "student"] = "student"
    layer_map: Literal["paper", "uniform"] | list[int] = "paper"
    student_depth: int | None = None
    filter_type: Literal["linear", "mlp"] = "linear"
    filter_dim: int | None = None
    head_dropout: float | None = None
    kl_alpha: float = 20.0
    mse_alpha: float = 20.0
    temperature: float = 2.0
    mask_padding: bool = False
    finetune_teacher: bool = True
    finetune_student: bool = True
    teacher_lr: float | None = None
    teacher_batch_size: int | None = None
    teacher_epochs: int | None = None
    teacher_warmup_ratio: float | None = None
    teacher_filters: str | None = None
    student_filters: str | None = None

    def __post_init__(self) -> None:
        for name in ("student_depth", "filter_dim", "teacher_batch_size", "teacher_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"method.{name} must be >= 1, got {value}.")
        for name in ("kl_alpha", "mse_alpha"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")
        if self.teacher_lr is not None and not self.teacher_lr > 0:
            raise ConfigError(f"method.teacher_lr must be > 0, got {self.teacher_lr}.")
        for name in ("head_dropout", "teacher_warmup_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"method.{name} must be in [0, 1), got {value}.")

    @classmethod
    def tiny(cls) -> TEDConfig:
        """One Stage-II run with random filters on both sides (no stage plan, no files)."""
        return cls(stage="distill", layer_map="uniform")


def _hidden(config: PretrainedConfig) -> int:
    return int(config.hidden_size)


class TED:
    """Task-aware filters learned on frozen models, then filtered hidden-state MSE + logit KD."""

    name: ClassVar[str] = "ted"
    Config: ClassVar[type[TEDConfig]] = TEDConfig
    uses_teacher: ClassVar[bool] = True

    def __init__(self, cfg: TEDConfig, ctx: MethodContext) -> None:
        if cfg.stage not in ("filters", "distill"):
            raise ConfigError(
                f"method.stage={cfg.stage} runs as a plan of several runs (`distil distill` does it); a "
                "single run needs method.stage=filters or method.stage=distill."
            )
        assert ctx.teacher is not None
        self.cfg, self.is_regression = cfg, ctx.is_regression
        self.heads = nn.ModuleDict()
        self.teacher_filters: LayerProjections | None = None
        kind = cfg.filter_type
        if cfg.stage == "filters":
            model = ctx.student
            # The backbone is frozen (Stage I trains only filters and their heads); it stays in train()
            # mode in the loop, so its dropout is active, as in the released code.
            model.requires_grad_(False)
            layers = self._filtered_layers(model, ctx.teacher)
            side_out = _hidden(model.config) if cfg.side == "teacher" else _hidden(ctx.teacher.config)
            dim = cfg.filter_dim or side_out
            self.filters = LayerProjections(
                layers, _hidden(model.config), dim, kind, activation_of(model.config)
            )
            self.heads = filter_heads(model, layers, dim, ctx.num_labels, cfg.head_dropout)
            return
        depth_t, depth_s = num_layers(ctx.teacher.config), num_layers(ctx.student.config)
        self.map = resolve_layer_map(cfg.layer_map, depth_t, depth_s)
        dim = cfg.filter_dim or _hidden(ctx.teacher.config)
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

    def _filtered_layers(self, model: PreTrainedModel, teacher: PreTrainedModel) -> list[int]:
        depth = num_layers(model.config)
        if self.cfg.side == "student":
            # Check now that the map will fit Stage II; the student's filters sit on all its layers.
            resolve_layer_map(self.cfg.layer_map, num_layers(teacher.config), depth)
            return list(range(1, depth + 1))
        if isinstance(self.cfg.layer_map, str) and self.cfg.student_depth is None:
            raise ConfigError(
                f"method.side=teacher with method.layer_map={self.cfg.layer_map} needs method.student_depth "
                "(the student's layer count K), or give method.layer_map as an explicit list."
            )
        k = self.cfg.student_depth or len(self.cfg.layer_map)
        return list(dict.fromkeys(resolve_layer_map(self.cfg.layer_map, depth, k)))

    @classmethod
    def model_head(cls, task_head: str) -> str:
        """The task's own head (``seq``, ``qa`` or ``lm``); other tasks are rejected before training."""
        if task_head not in ("seq", "qa", "lm"):
            raise ConfigError(
                f"Method 'ted' supports classification and regression (task head 'seq'), extractive QA "
                f"('qa', data.task=squad/squad_v2) and causal LM ('lm', data.task=lm), not {task_head!r}."
            )
        return task_head

    @classmethod
    def stage_plan(cls, cfg: RunConfig) -> list[tuple[str, RunConfig]]:
        """Stage runs for ``stage: all`` / ``finetune``; ``[]`` for a single-stage run."""
        from distil.methods._ted_plan import check_single_stage, plan_stages

        if cfg.method.stage in ("all", "finetune"):
            return plan_stages(cfg)
        check_single_stage(cfg)
        return []

    def student_request(self) -> FeatureRequest:
        """Hidden states (and, in Stage II, the logits)."""
        return FeatureRequest(logits=self.cfg.stage == "distill", hidden_states=True)

    def teacher_request(self) -> FeatureRequest | None:
        """Stage II: logits and hidden states; Stage I uses no teacher."""
        return FeatureRequest(logits=True, hidden_states=True) if self.cfg.stage == "distill" else None

    def trainable_modules(self) -> nn.ModuleDict:
        """The learned filters (and, in Stage I, their heads); saved as ``method.safetensors``."""
        modules = nn.ModuleDict({"filters": self.filters})
        if self.cfg.stage == "filters":
            modules["heads"] = self.heads
        return modules

    def loss(self, batch: dict[str, Any], student: Features, teacher: Features | None) -> LossOutput:
        """Stage I: mean task loss of the filter heads. Stage II: task + KL + filtered-state MSE."""
        assert student.hidden_states is not None
        if self.cfg.stage == "filters":
            return self._filters_loss(batch, student)
        assert teacher is not None and teacher.hidden_states is not None and self.teacher_filters is not None
        assert student.logits is not None and teacher.logits is not None
        task = task_loss(student.logits, batch["labels"], self.is_regression)
        # One logit (regression) gives softmax == 1 on both sides, so this KL is exactly 0 (gotcha 6).
        # QA: start and end rows, no padding mask (released); LM: positions that have a next token.
        kl = kd_kl(
            student.logits, teacher.logits, self.cfg.temperature, soft_target_mask(batch, student.logits)
        )
        with torch.no_grad():
            self.teacher_filters.to(teacher.hidden_states[0].device)
            targets = self.teacher_filters(teacher.hidden_states)
        mask = student.attention_mask if self.cfg.mask_padding else None
        mse = mapped_hidden_mse(self.filters(student.hidden_states), targets, mask)
        total = task + self.cfg.kl_alpha * kl + self.cfg.mse_alpha * mse
        return LossOutput(total=total, parts={"task": task, "kl": kl, "filter_mse": mse})

    def _filters_loss(self, batch: dict[str, Any], student: Features) -> LossOutput:
        assert student.hidden_states is not None
        parts: dict[str, Tensor] = {}
        for n, out in zip(self.filters.layers, self.filters(student.hidden_states), strict=True):
            logits = self.heads[f"layer_{n}"](out, student.attention_mask, student.causal)
            parts[f"filter_{n}"] = task_loss(logits, batch["labels"], self.is_regression)
        total = torch.stack(list(parts.values())).mean()
        return LossOutput(total=total, parts=parts)
