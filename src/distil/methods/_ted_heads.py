"""TED's Stage-I heads: one per filter, reading the filter's output and giving the task's logits.

Each head returns logits in the layout of the model's own head (see ``Features.logits``), so the
Stage-I loss is the shared ``task_loss`` for every task:

- sequence classification / regression (``seq``): `FilterHead`, a fresh pooler and classifier
  (released ``TEDContextPooler`` + classifier), ``[B, num_labels]``. The released pooler reads token 0;
  here an encoder's head averages the filtered states over the real tokens by default (``pooling``),
  because in the lower layers of many encoders token 0 is an attention sink, nearly the same vector for
  every input, and a fresh head cannot learn the task from it (docs/methods/ted.md, docs/results.md);
- extractive QA (``qa``): `SpanHead`, ``Linear(d_f -> 2)`` per token, returned as ``[B, 2, S]`` (start
  and end scores), so the loss is ``(CE_start + CE_end) / 2`` (released ``learn_filters_qa``);
- causal LM (``lm``): `TokenHead`, ``Linear(d_f -> vocab)`` per token, ``[B, S, vocab]``, trained with the
  next-token loss. No code was released for this variant (the paper's appendix A.1 gives data and
  optimiser only); the head is initialised from the model's own LM head when ``d_f`` equals its input
  width, else randomly. It has ``vocab x d_f`` weights per filter (38.6M for GPT-2 at d_f = 768), trained
  and saved with the filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN

from distil.models.heads import head_of_architectures

__all__ = ["FilterHead", "Pooling", "SpanHead", "TokenHead", "filter_heads", "head_kind", "pool"]

HeadKind = Literal["seq", "qa", "lm"]
# How a classification head reduces [B, S, d] to [B, d]: ``first`` (token 0, the released code), ``mean``
# (over real tokens), ``last`` (the last real token), ``auto`` (mean for encoders, last for decoders).
Pooling = Literal["auto", "first", "mean", "last"]


def pool(states: Tensor, mask: Tensor, causal: bool, pooling: Pooling) -> Tensor:
    """``[B, S, d]`` states with their ``[B, S]`` attention mask -> ``[B, d]`` (right padding)."""
    how = ("last" if causal else "mean") if pooling == "auto" else pooling
    if how == "first":
        return states[:, 0]
    if how == "last":
        # Right padding: in a decoder the last real token is the only one that has seen the whole input.
        last = mask.long().sum(-1).clamp(min=1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def head_kind(model: PreTrainedModel) -> HeadKind:
    """Which task head ``model`` carries, from its class (``...ForQuestionAnswering``, ``...ForCausalLM``)."""
    head = head_of_architectures([type(model).__name__])
    if head == "qa":
        return "qa"
    return "lm" if head == "lm" else "seq"


class FilterHead(nn.Module):
    """Stage-I head of one filter: pool (see `Pooling`), dense + act, classifier."""

    def __init__(
        self, dim: int, num_labels: int, act: str, dropout: float, pooling: Pooling = "auto"
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, dim)
        self.act = ACT2FN[act]
        self.out = nn.Linear(dim, num_labels)

    def forward(self, states: Tensor, mask: Tensor, causal: bool) -> Tensor:
        """``[B, S, dim]`` filtered states -> ``[B, num_labels]`` logits."""
        pooled = pool(states, mask, causal, self.pooling)
        return self.out(self.dropout(self.act(self.dense(self.dropout(pooled)))))


class SpanHead(nn.Module):
    """Stage-I QA head of one filter: start and end scores per token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, 2)

    def forward(self, states: Tensor, mask: Tensor, causal: bool) -> Tensor:
        """``[B, S, dim]`` filtered states -> ``[B, 2, S]`` start/end scores (mask and causal unused)."""
        return self.out(states).transpose(1, 2)


class TokenHead(nn.Module):
    """Stage-I LM head of one filter: next-token logits per position."""

    def __init__(self, dim: int, vocab: int, init: nn.Module | None = None) -> None:
        super().__init__()
        bias = getattr(init, "bias", None) is not None
        self.out = nn.Linear(dim, vocab, bias=bias)
        weight, init_bias = getattr(init, "weight", None), getattr(init, "bias", None)
        if isinstance(weight, Tensor) and tuple(weight.shape) == (vocab, dim):
            with torch.no_grad():  # a copy: the head trains without touching the (frozen) model's head
                self.out.weight.copy_(weight)
                if isinstance(init_bias, Tensor):
                    self.out.bias.copy_(init_bias)

    def forward(self, states: Tensor, mask: Tensor, causal: bool) -> Tensor:
        """``[B, S, dim]`` filtered states -> ``[B, S, vocab]`` logits (mask and causal unused)."""
        return self.out(states)


def classifier_dropout(config: PretrainedConfig) -> float:
    """The model's classifier dropout (``cls_dropout``, ``classifier_dropout``, ...), default 0.1."""
    for name in ("cls_dropout", "classifier_dropout", "hidden_dropout_prob", "summary_first_dropout"):
        value = getattr(config, name, None)
        if isinstance(value, int | float):
            return float(value)
    return 0.1


def filter_heads(
    model: PreTrainedModel,
    layers: Sequence[int],
    dim: int,
    num_labels: int,
    dropout: float | None,
    pooling: Pooling = "auto",
) -> nn.ModuleDict:
    """One Stage-I head per filtered layer, keyed ``layer_<n>``, for the task of ``model``'s head.

    Args:
        model: The frozen model whose filters are learned.
        layers: 1-indexed filtered layers.
        dim: Filter output width d_f.
        num_labels: Classes of a ``seq`` task.
        dropout: Dropout of ``seq`` heads (default: the model's classifier dropout).
        pooling: How ``seq`` heads pool the tokens (`Pooling`).

    Returns:
        The heads.
    """
    kind = head_kind(model)
    heads = nn.ModuleDict()
    for n in layers:  # a layer listed twice gets one head (the later one)
        if kind == "qa":
            heads[f"layer_{n}"] = SpanHead(dim)
        elif kind == "lm":
            lm_head = model.get_output_embeddings()
            vocab = int(getattr(lm_head, "out_features", None) or model.config.vocab_size)
            heads[f"layer_{n}"] = TokenHead(dim, vocab, lm_head)
        else:
            act = getattr(model.config, "pooler_hidden_act", None) or "tanh"
            rate = dropout if dropout is not None else classifier_dropout(model.config)
            heads[f"layer_{n}"] = FilterHead(dim, num_labels, act, rate, pooling)
    return heads
