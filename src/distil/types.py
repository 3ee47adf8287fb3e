"""Typed records passed between layers: what to capture, what was captured, what a loss returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["HEAD_POSITIONS", "QKV", "FeatureRequest", "Features", "LossOutput"]

# Batch key (bool [batch, seq]): run the language-model head only at these positions, so that logits are
# [N, vocab] for the N selected positions. MLM needs scores at the ~15% masked tokens only, and the
# vocabulary projection over every token dominates a small model's step (methods add it in prepare_batch).
HEAD_POSITIONS = "head_positions"


@dataclass(frozen=True)
class FeatureRequest:
    """Which features a method needs from one model's forward pass.

    Attributes:
        logits: Return the prediction head's output.
        hidden_states: Return the embedding output and every layer's output.
        attentions: Return post-softmax attention probabilities (forces eager attention).
        qkv_layers: 0-indexed layers whose Q, K and V projection outputs are captured by hooks;
            negative indices count from the last layer.
    """

    logits: bool = True
    hidden_states: bool = False
    attentions: bool = False
    qkv_layers: tuple[int, ...] = ()

    def merge(self, other: FeatureRequest) -> FeatureRequest:
        """Return a request that asks for everything either request asks for."""
        return FeatureRequest(
            logits=self.logits or other.logits,
            hidden_states=self.hidden_states or other.hidden_states,
            attentions=self.attentions or other.attentions,
            qkv_layers=tuple(sorted(set(self.qkv_layers) | set(other.qkv_layers))),
        )


@dataclass
class QKV:
    """One layer's query, key and value projection outputs, before any rotary embedding.

    Attributes:
        query: ``[batch, seq, num_heads * head_dim]``, heads contiguous along the last axis.
        key: ``[batch, seq, num_kv_heads * head_dim]``.
        value: ``[batch, seq, num_kv_heads * head_dim]``.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (smaller than ``num_heads`` under grouped-query attention).
        head_dim: Size of one attention head.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass
class Features:
    """Everything a loss may look at from one forward pass of one model.

    Attributes:
        attention_mask: ``[batch, seq]``, 1 for real tokens.
        logits: ``[batch, num_labels]`` for classification, ``[batch, seq, vocab]`` for LM heads, and
            ``[batch, 2, seq]`` for extractive QA heads: the start scores and the end scores over the
            positions (HF's ``start_logits``/``end_logits`` stacked on axis 1), so that the class axis is
            last and the logit losses apply unchanged (``task_loss`` with ``[batch, 2]`` start/end labels
            is ``(CE_start + CE_end) / 2``; ``kd_kl`` is ``(KL_start + KL_end) / 2``).
        hidden_states: ``num_layers + 1`` tensors ``[batch, seq, hidden]``; index 0 is the embedding output.
        attentions: ``num_layers`` tensors ``[batch, heads, seq, seq]`` of attention probabilities.
        qkv: Captured projections keyed by 0-indexed layer.
        causal: Whether the model attends only to earlier positions (decoders).
    """

    attention_mask: torch.Tensor
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    qkv: dict[int, QKV] = field(default_factory=dict)
    causal: bool = False


@dataclass
class LossOutput:
    """A method's loss: the weighted total that is back-propagated and its named, unweighted parts."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
