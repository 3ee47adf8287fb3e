"""Perplexity of a causal LM on a long text with a sliding window.

As in Hugging Face's "Perplexity of fixed-length models" guide
(https://huggingface.co/docs/transformers/perplexity): the text is tokenised once; windows of at most
``max_length`` tokens start every ``stride`` tokens; each window scores only the tokens that no earlier
window scored (the last ``stride`` of a full window), so every token after the first is scored exactly
once, with up to ``max_length - 1`` tokens of context. ``stride == max_length`` gives disjoint windows,
whose first tokens have no context and are not scored (as in the guide). One difference: each window's
mean is weighted by its exact count of scored tokens (the guide subtracts one token per window for the
label shift, also in the windows whose first target is not at position 0 and so loses none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel

from distil.evaluation.shards import Shard
from distil.progress import Phase

__all__ = ["perplexity_metrics", "perplexity_windows", "windowed_perplexity"]

_ALONE = Shard()


def perplexity_windows(ids: Sequence[int], max_length: int, stride: int) -> dict[str, list[Any]]:
    """Cut a token stream into scoring windows.

    Args:
        ids: The whole evaluation text's token ids.
        max_length: Tokens per window (the context limit).
        stride: How far each window starts after the previous one (``1 <= stride <= max_length``).

    Returns:
        Columns ``input_ids`` (the window's tokens), ``score_from`` (the first position in the window
        whose token is scored; earlier positions are context only) and ``idx``.

    Raises:
        ValueError: ``stride`` is out of range or the text has fewer than two tokens.
    """
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, {max_length}], got {stride}.")
    if len(ids) < 2:
        raise ValueError("Perplexity needs a text of at least two tokens.")
    rows: dict[str, list[Any]] = {"input_ids": [], "score_from": [], "idx": []}
    scored_until = 1  # token 0 has no context: never scored
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        first = max(scored_until, begin + 1)
        if first < end:
            rows["input_ids"].append(list(ids[begin:end]))
            rows["score_from"].append(first - begin)
            rows["idx"].append(len(rows["idx"]))
        scored_until = end
        if end == len(ids):
            break
    return rows


@torch.no_grad()
def windowed_perplexity(
    model: PreTrainedModel, windows: Dataset, batch_size: int, shard: Shard = _ALONE
) -> dict[str, float]:
    """Token-level perplexity of ``model`` over ``windows`` (from `perplexity_windows`).

    Windows of equal length are batched together (all but the last are full). Each forward pass returns
    ``[batch, window, vocab]`` logits, so memory grows with ``batch_size * max_length * vocab``.

    Args:
        model: A causal language model.
        windows: Rows with ``input_ids`` and ``score_from``.
        batch_size: Windows per forward pass.
        shard: This process's share when several processes evaluate together.

    Returns:
        ``perplexity`` (exp of the mean negative log-likelihood), ``neg_perplexity`` (its negative, a
        higher-is-better key for checkpoint selection), ``nll`` (mean per scored token, in nats) and
        ``eval_tokens`` (tokens scored).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: list[list[dict[str, Any]]] = []
    i = 0
    while i < len(windows):
        length = len(windows[i]["input_ids"])
        chunk: list[dict[str, Any]] = []
        while i < len(windows) and len(chunk) < batch_size and len(windows[i]["input_ids"]) == length:
            chunk.append(windows[i])
            i += 1
        chunks.append(chunk)
    mine, padding = shard.take(chunks)
    total, count = 0.0, 0
    todo = [*mine, *chunks[:1] * padding]
    phase = Phase(f"scoring perplexity on {len(windows)} windows", len(todo), enabled=shard.rank == 0)
    for n, chunk in enumerate(todo):
        ids = torch.tensor([r["input_ids"] for r in chunk], dtype=torch.long, device=device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        phase.update()
        if n >= len(mine):
            continue  # a padding pass: every process runs as many forward passes
        # Position p - 1 predicts token p; token p counts when p >= score_from.
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        positions = torch.arange(1, ids.shape[1], device=device)
        first = torch.tensor([r["score_from"] for r in chunk], device=device)
        scored = positions[None, :] >= first[:, None]
        total += float(nll[scored].sum())
        count += int(scored.sum())
    phase.close()
    model.train(was_training)
    return perplexity_metrics(total, count, shard)


def perplexity_metrics(total: float, count: int, shard: Shard = _ALONE) -> dict[str, float]:
    """Perplexity from this process's summed negative log-likelihood over ``count`` tokens, all processes'.

    Returns:
        ``perplexity`` (exp of the mean negative log-likelihood), ``neg_perplexity`` (its negative, a
        higher-is-better key for checkpoint selection), ``nll`` (mean per scored token, in nats) and
        ``eval_tokens`` (tokens scored).
    """
    parts = shard.gather((total, count))
    total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
    mean = total / max(count, 1)
    ppl = math.exp(min(mean, 700.0))  # exp overflows a float above ~709
    return {"perplexity": ppl, "neg_perplexity": -ppl, "nll": mean, "eval_tokens": float(count)}
