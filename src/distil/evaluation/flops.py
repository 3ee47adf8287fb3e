"""FLOPs of one forward pass per token, counted by PyTorch's FLOP counter on the real model."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.evaluation.speed import random_batch

__all__ = ["FLOPS_METHOD", "flops_per_token"]

FLOPS_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over one forward pass at batch 1 and seq_length tokens "
    "(eager attention), divided by seq_length; matrix products count 2*m*n*k"
)


def flops_per_token(model: PreTrainedModel, seq_length: int) -> int:
    """FLOPs of one forward pass of ``seq_length`` tokens (batch 1, no padding), divided by the tokens.

    Only matrix products are counted (linear layers, attention scores and weighted values, the head),
    ``2*m*n*k`` each; element-wise work (softmax, norms, activations) is left out, as usual. For a
    BERT-style encoder with ``L`` layers, width ``d``, feed-forward width ``f`` and ``n`` tokens this is
    ``L * (8*d^2 + 4*d*f + 4*n*d)`` plus the pooler and classifier (about ``2*d^2 / n``).

    The count runs under eager attention, switched on for the call: the CPU sdpa kernel is invisible to
    the counter, which would drop the ``4*n*d`` attention term.

    Args:
        model: A classifier of a supported family (its attention setting is restored afterwards).
        seq_length: Tokens per sequence; the attention term grows with it.

    Returns:
        FLOPs per token, rounded down.
    """
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    batch = model_inputs(model, random_batch(int(model.config.vocab_size), 1, seq_length))
    device = next(model.parameters()).device
    requires_grad = [p.requires_grad for p in model.parameters()]
    # The counter's module tracker hooks autograd and fails on DeBERTa unless no parameter needs grad.
    model.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        for p, flag in zip(model.parameters(), requires_grad, strict=True):
            p.requires_grad_(flag)
        if before != "eager":
            model.set_attn_implementation(before)
    return int(counter.get_total_flops()) // seq_length
