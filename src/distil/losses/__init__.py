"""Pure, mask-aware distillation losses over typed tensors."""

from __future__ import annotations

from distil.losses.logits import kd_kl, logit_mse, task_loss
from distil.losses.relations import attention_kl, relation_kl, value_relation_kl

__all__ = ["attention_kl", "kd_kl", "logit_mse", "relation_kl", "task_loss", "value_relation_kl"]
