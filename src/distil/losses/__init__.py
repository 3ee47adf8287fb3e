"""Pure, mask-aware distillation losses over typed tensors."""

from __future__ import annotations

from distil.losses.baselines import (
    attention_score_mse,
    attention_scores,
    masked_cosine_loss,
    next_token_labels,
    scored_next_token_labels,
    soft_cross_entropy,
    token_cross_entropy,
)
from distil.losses.hidden import hidden_mse, mapped_hidden_mse
from distil.losses.logits import kd_kl, logit_mse, soft_target_mask, task_loss
from distil.losses.relations import attention_kl, relation_kl, value_relation_kl

__all__ = [
    "attention_kl",
    "attention_score_mse",
    "attention_scores",
    "hidden_mse",
    "kd_kl",
    "logit_mse",
    "mapped_hidden_mse",
    "masked_cosine_loss",
    "next_token_labels",
    "relation_kl",
    "scored_next_token_labels",
    "soft_cross_entropy",
    "soft_target_mask",
    "task_loss",
    "token_cross_entropy",
    "value_relation_kl",
]
