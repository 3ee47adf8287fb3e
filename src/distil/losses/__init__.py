"""Pure, mask-aware distillation losses over typed tensors."""

from __future__ import annotations

from distil.losses.logits import kd_kl, logit_mse, task_loss

__all__ = ["kd_kl", "logit_mse", "task_loss"]
