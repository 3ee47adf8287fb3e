"""Hinton-style knowledge distillation on the logits (Hinton, Vinyals and Dean, 2015, arXiv:1503.02531).

loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * task loss.
For regression tasks the soft term is the MSE between student and teacher outputs. ``method.divergence``
replaces the forward KL with another member of the family (`distil.losses.divergences`): reverse KL,
GKD's generalized JSD, DistiLLM's skew KL and skew reverse KL, or total variation.

The same code covers the token-level tasks, through the shapes of ``Features.logits`` and ``labels``:
extractive QA (``[B, 2, S]`` start/end scores, ``[B, 2]`` labels) gives ``(KL_start + KL_end) / 2`` and
``(CE_start + CE_end) / 2``, each a batch mean (TED's released QA loss); causal LM (``[B, S, V]`` logits,
``[B, S]`` shifted next-token labels) gives a KL averaged over the positions that have a next token
(`soft_target_mask`) and the next-token cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distil.errors import ConfigError
from distil.losses import kd_kl, logit_mse, soft_target_mask, task_loss
from distil.losses.divergences import DIVERGENCES, Divergence, divergence
from distil.losses.topk import topk_kd_kl
from distil.methods.base import LogitMethod, MethodContext, require_labels
from distil.types import Batch, Features, LossOutput, RunView

__all__ = ["KD", "KDConfig", "check_divergence_settings"]


def check_divergence_settings(kind: str, beta: float, skew_alpha: float) -> None:
    """Validate ``method.divergence`` and its parameters (KD's and GKD's alike).

    Raises:
        ConfigError: An unknown divergence, or ``beta`` / ``skew_alpha`` out of range.
    """
    if kind not in DIVERGENCES:
        raise ConfigError(f"method.divergence must be one of {', '.join(DIVERGENCES)}, got {kind}.")
    if not 0 <= beta <= 1:
        raise ConfigError(f"method.beta must be in [0, 1], got {beta}.")
    if not 0 < skew_alpha < 1:
        raise ConfigError(f"method.skew_alpha must be in (0, 1), got {skew_alpha}.")


@dataclass
class KDConfig:
    """Logit distillation settings.

    Attributes:
        temperature: Softmax temperature T of both models; the KL is scaled by T^2 so gradients keep
            their size as T changes.
        alpha: Weight of the distillation term; the task loss gets ``1 - alpha``.
        divergence: The soft term between the teacher's distribution ``p`` and the student's ``q``:
            ``forward_kl`` (``KL(p || q)``, the paper's), ``reverse_kl`` (``KL(q || p)``), ``jsd``
            (generalized JSD with mixture weight ``beta``), ``skew_kl`` / ``skew_reverse_kl`` (skewed by
            ``skew_alpha``) or ``tv`` (total variation). Only ``forward_kl`` reads a top-k teacher cache.
        beta: ``jsd``'s weight of the teacher in the mixture (0: forward KL, 1: reverse KL, as in GKD).
        skew_alpha: The skew of ``skew_kl`` / ``skew_reverse_kl`` (DistiLLM's 0.1 by default).
    """

    temperature: float = 2.0
    alpha: float = 0.5
    divergence: Divergence = "forward_kl"
    beta: float = 0.5
    skew_alpha: float = 0.1

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"method.alpha must be in [0, 1], got {self.alpha}.")
        check_divergence_settings(self.divergence, self.beta, self.skew_alpha)

    name: ClassVar[str] = "kd"

    @classmethod
    def tiny(cls) -> KDConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """KD needs labels (its task term) and the teacher's logits of the task's head."""
        require_labels("kd", run)

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return None

    @property
    def topk_temperature(self) -> float | None:
        """The temperature at which the forward KL reads a top-k teacher cache (`distil.losses.topk`).

        ``None`` for the other divergences: they need the teacher's whole distribution.
        """
        return self.temperature if self.divergence == "forward_kl" else None


class KD(LogitMethod):
    """Soft-label distillation mixed with the task loss."""

    name: ClassVar[str] = "kd"
    Config: ClassVar[type[KDConfig]] = KDConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "kd"

    def __init__(self, cfg: KDConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.is_regression = ctx.is_regression

    @property
    def topk_temperature(self) -> float | None:
        """Token-level KD reads a top-k teacher cache at its config's temperature."""
        return self.cfg.topk_temperature

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Alpha * soft term + (1 - alpha) * task loss; both parts are logged unweighted."""
        assert student.logits is not None and teacher is not None and batch.labels is not None
        if teacher.topk is not None:  # a top-k cache of token distributions (causal LM)
            mask = soft_target_mask(batch.labels, student.logits)
            t = teacher.topk
            soft = topk_kd_kl(student.logits, t.index, t.values, t.rest, self.cfg.temperature, mask)
        elif self.is_regression:
            assert teacher.logits is not None
            soft = logit_mse(student.logits, teacher.logits)
        else:
            assert teacher.logits is not None
            mask = soft_target_mask(batch.labels, student.logits)
            c = self.cfg
            if c.divergence == "forward_kl":  # the closed-form backward of `kd_kl`
                soft = kd_kl(student.logits, teacher.logits, c.temperature, mask)
            else:
                soft = divergence(
                    student.logits, teacher.logits, c.divergence, temperature=c.temperature, mask=mask,
                    beta=c.beta, alpha=c.skew_alpha,
                )  # fmt: skip
        task = task_loss(student.logits, batch.labels, self.is_regression)
        total = self.cfg.alpha * soft + (1 - self.cfg.alpha) * task
        return LossOutput(total=total, parts={"kd": soft, "task": task})
