"""Pre-softmax attention scores handed over by the attention computation itself, not computed twice.

TinyBERT-style distillation compares the scores ``Q K^T * scale`` of student and teacher layers. Rebuilding
them from captured Q and K (`distil.losses.attention_scores`) repeats a product the attention has just
done, and before any rotary embedding, so it is refused on rotary families. Here an attention function
registered with transformers' ``AttentionInterface`` (``distil_scores``) computes the attention of the
captured layers the way the models' own eager attention does (scores, soft-capping, mask, float32
softmax, dropout, values) and keeps the scores it computed on the way; every other layer runs the model's
own implementation (sdpa by default). The model uses this function only inside `capture_scores`, which
switches ``config._attn_implementation`` for the forward passes run in it and restores it after.

The scores are the ones the softmax sees before the mask is added: after the rotary embedding and Gemma
2's soft-capping. Families whose attention does not go through the interface (DeBERTa-v2) keep the
recomputation (`distil.models.families.Family.attention_interface`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from distil.errors import ModelError
from distil.models.families import family_of, get_layers

__all__ = ["SCORES_IMPLEMENTATION", "capture_scores"]

SCORES_IMPLEMENTATION = "distil_scores"


@dataclass
class _Capture:
    base: str  # the model's own implementation: it computes every layer not captured
    layers: dict[int, int]  # id(attention module) -> layer index
    out: dict[int, Tensor] = field(default_factory=dict)


_ACTIVE: ContextVar[_Capture | None] = ContextVar("distil_scores", default=None)


def _eager(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scaling: float | None,
    dropout: float, softcap: float | None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The models' eager attention; returns its output, its probabilities and its pre-mask scores."""
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each K/V head serves a group of Q heads
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * (
        query.shape[-1] ** -0.5 if scaling is None else scaling
    )
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    weights = scores if mask is None else scores + mask[:, :, :, : key.shape[-2]]
    probs = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs, scores


def _attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    capture = _ACTIVE.get()
    layer = capture.layers.get(id(module)) if capture is not None else None
    if layer is None and capture is not None and capture.base in ALL_ATTENTION_FUNCTIONS:
        own = ALL_ATTENTION_FUNCTIONS[capture.base]
        extra = {"softcap": softcap} if softcap is not None else {}
        result: tuple[Tensor, Tensor | None] = own(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **extra, **kwargs
        )
        return result
    output, probs, scores = _eager(module, query, key, value, attention_mask, scaling, dropout, softcap)
    if layer is not None and capture is not None:
        capture.out[layer] = scores
    return output, probs


AttentionInterface.register(SCORES_IMPLEMENTATION, _attention)
# Additive float masks: what the eager math adds, and what sdpa accepts for the layers it computes.
AttentionMaskInterface.register(SCORES_IMPLEMENTATION, eager_mask)
assert SCORES_IMPLEMENTATION in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


def _attention_module(model: PreTrainedModel, index: int) -> nn.Module:
    """The module that calls the attention function in block ``index`` (the parent of its projections)."""
    spec = family_of(model)
    path = spec.fused_qkv or spec.query
    assert path is not None
    parent = path.rpartition(".")[0]
    block = get_layers(model)[index]
    return block.get_submodule(parent) if parent else block


@contextmanager
def capture_scores(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Collect the pre-softmax scores of ``layers`` (0-indexed) from the forward passes run inside.

    Yields:
        ``{layer: [batch, heads, seq, seq]}``, filled by each forward pass (not detached).

    Raises:
        ModelError: The family's attention does not go through transformers' attention interface.
    """
    spec = family_of(model)
    if not spec.attention_interface:
        raise ModelError(
            f"{model.config.model_type!r} attention does not call transformers' attention interface; its "
            "scores are rebuilt from captured Q and K instead."
        )
    depth = len(get_layers(model))
    capture = _Capture(
        base=str(model.config._attn_implementation),
        layers={id(_attention_module(model, i % depth)): i % depth for i in layers},
    )
    token = _ACTIVE.set(capture)
    model.config._attn_implementation = SCORES_IMPLEMENTATION
    try:
        yield capture.out
    finally:
        model.config._attn_implementation = capture.base
        _ACTIVE.reset(token)
