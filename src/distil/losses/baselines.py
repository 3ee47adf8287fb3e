"""Losses of the DistilBERT-style and TinyBERT-style baselines: masked token losses and attention scores.

DistilBERT: Sanh, Debut, Chaumond and Wolf, "DistilBERT, a distilled version of BERT: smaller, faster,
cheaper and lighter", 2019, https://arxiv.org/abs/1910.01108 (cosine loss, MLM / next-token loss).
TinyBERT: Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP
2020, https://arxiv.org/abs/1909.10351 (attention-score MSE, hidden MSE, soft cross-entropy).

Token-level losses average over the positions a mask keeps (real tokens), so padding of any length or
content never changes them (the hidden-state MSE is ``distil.losses.hidden.hidden_mse`` with a mask).
Everything is computed in float32 and the teacher side is detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "attention_score_mse",
    "attention_scores",
    "masked_cosine_loss",
    "next_token_labels",
    "soft_cross_entropy",
    "token_cross_entropy",
]

IGNORE_INDEX = -100  # label of a position that no token loss counts (F.cross_entropy's default)


def _zero(like: Tensor) -> Tensor:
    # A zero that stays attached to the graph, so backward() works when a mask keeps nothing.
    return like.float().sum() * 0.0


def _check(name: str, student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{name}: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}.")


def masked_cosine_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """DistilBERT's ``CosineEmbeddingLoss`` with target +1: mean of ``1 - cos(s, t)`` over kept positions.

    Args:
        student: ``[B, S, D]`` last hidden states (projected to the teacher's width if they differ).
        teacher: ``[B, S, D]``; no gradient flows into it.
        mask: ``[B, S]``; non-zero marks real tokens.

    Returns:
        A float32 scalar in ``[0, 2]``; 0 when nothing is kept.
    """
    _check("masked_cosine_loss", student, teacher)
    keep = mask.bool()
    s, t = student[keep].float(), teacher.detach()[keep].float()
    if s.shape[0] == 0:
        return _zero(student)
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


def token_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the positions whose label is not ``IGNORE_INDEX`` (MLM / next token).

    Args:
        logits: ``[B, S, V]``.
        labels: ``[B, S]`` token ids, ``IGNORE_INDEX`` where nothing is predicted.

    Returns:
        A float32 scalar; 0 when no position has a label (``F.cross_entropy`` would give NaN).
    """
    keep = labels != IGNORE_INDEX
    kept = int(keep.sum())
    if kept == 0:
        return _zero(logits)
    if 2 * kept >= keep.numel():
        # Most rows are scored (next-token labels, an MLM head run only at the masked positions): no
        # gathered copy of the logits, whose backward would scatter a vocabulary-wide gradient into zeros.
        flat = logits.reshape(-1, logits.shape[-1]).float()
        return F.cross_entropy(flat, labels.reshape(-1).long(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits[keep].float(), labels[keep].long())


def next_token_labels(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Labels of the causal LM loss: position ``i`` predicts token ``i + 1`` when both are real tokens.

    Args:
        input_ids: ``[B, S]``.
        attention_mask: ``[B, S]``; 0 marks padding.

    Returns:
        ``[B, S]`` long labels, ``IGNORE_INDEX`` at the last position and wherever either token is padding.
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    real = attention_mask.bool()
    pair = real[:, :-1] & real[:, 1:]
    labels[:, :-1] = torch.where(pair, input_ids[:, 1:].long(), IGNORE_INDEX)
    return labels


def scored_next_token_labels(input_ids: Tensor, scored: Tensor) -> Tensor:
    """Labels of a causal LM loss that scores only some tokens (an assistant's, a sampled completion's).

    Position ``t`` predicts token ``t + 1``; it is scored when token ``t + 1`` is marked, so the last
    unmarked token before a marked span predicts the span's first token.

    Args:
        input_ids: ``[B, S]``.
        scored: ``[B, S]``, non-zero on the tokens to predict (0 on context and padding).

    Returns:
        ``[B, S]`` long labels, ``IGNORE_INDEX`` wherever nothing is scored.
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    labels[:, :-1] = torch.where(scored[:, 1:].bool(), input_ids[:, 1:].long(), IGNORE_INDEX)
    return labels


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """TinyBERT's prediction-layer loss ``-softmax(z_t / t) . log_softmax(z_s / t)``, mean over examples.

    The released ``task_distill.py`` averages over examples *and* classes (``.mean()`` of the
    ``[B, C]`` product), which also divides by ``C``; we sum over classes, a plain cross-entropy per
    example, so the scale does not depend on the number of labels.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``; no gradient flows into it.
        temperature: ``t > 0`` (TinyBERT uses 1).

    Returns:
        A float32 scalar.
    """
    _check("soft_cross_entropy", student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"soft_cross_entropy: temperature must be > 0, got {temperature}.")
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(p_teacher * log_p_student).sum(-1).mean()


def attention_scores(query: Tensor, key: Tensor, num_heads: int, num_kv_heads: int | None = None) -> Tensor:
    """Pre-softmax attention scores ``Q_h K_h^T / sqrt(d_h)`` per head, from captured projections.

    These are the scores of BERT, RoBERTa, ELECTRA, DistilBERT and GPT-2 before the additive mask. They are
    *not* the scores of rotary families (Llama: Q/K are captured before the rotation) nor the full score
    of DeBERTa (whose relative-position terms are left out); callers decide whether that is acceptable.

    Args:
        query: ``[B, S, H * d_h]``, heads contiguous along the last axis (``distil.types.QKV.query``).
        key: ``[B, S, H_kv * d_h]``; under grouped-query attention each key head serves ``H / H_kv``
            consecutive query heads, as in Hugging Face's ``repeat_kv``.
        num_heads: ``H``.
        num_kv_heads: ``H_kv`` (default ``H``).

    Returns:
        ``[B, H, S, S]`` float32 scores.
    """
    kv_heads = num_kv_heads or num_heads
    batch, seq, width = query.shape
    head_dim = width // num_heads
    q = query.float().view(batch, seq, num_heads, head_dim).transpose(1, 2)
    k = key.float().view(batch, seq, kv_heads, head_dim).transpose(1, 2)
    if kv_heads != num_heads:
        k = k.repeat_interleave(num_heads // kv_heads, dim=1)
    return q @ k.transpose(-1, -2) / math.sqrt(head_dim)


def attention_score_mse(
    student_scores: Tensor, teacher_scores: Tensor, attention_mask: Tensor, *, causal: bool = False
) -> Tensor:
    """TinyBERT's attention loss: MSE between pre-softmax scores, masked entries zeroed on both sides.

    Entries whose key is padding (TinyBERT zeroes them: scores <= -100 after the additive mask), whose
    query is padding, or, for decoders, whose key lies after the query are left out. The squared error is
    averaged over the kept entries of all heads, so padding of any length or content changes nothing;
    without padding (and for an encoder) this is TinyBERT's ``MSELoss`` over ``[B, H, S, S]`` exactly.

    Args:
        student_scores: ``[B, H, S, S]`` from `attention_scores`.
        teacher_scores: ``[B, H, S, S]``, same number of heads; no gradient flows into it.
        attention_mask: ``[B, S]``; 0 marks padding.
        causal: Also drop entries above the diagonal (keys after the query).

    Returns:
        A float32 scalar; 0 when nothing is kept.

    Raises:
        ValueError: The shapes differ (e.g. different head counts).
    """
    _check("attention_score_mse", student_scores, teacher_scores)
    real = attention_mask.bool()
    keep = real[:, None, :, None] & real[:, None, None, :]  # [B, 1, S, S]: the same for every head
    if causal:
        seq = real.shape[-1]
        keep = keep & torch.ones(seq, seq, dtype=torch.bool, device=real.device).tril()
    # Counted without a device sync; no entry kept gives 0 / 1 = 0, still attached to the graph.
    kept = keep.sum() * student_scores.shape[1]
    result: Tensor = _KeptSquaredError.apply(student_scores, teacher_scores.detach(), keep, kept)
    return result


class _KeptSquaredError(torch.autograd.Function):
    """``sum over kept entries of (s - t)^2 / kept`` with the closed-form gradient ``2 (s - t) / kept``.

    The scores are ``[B, H, S, S]`` per mapped layer, the largest tensors of an attention loss: autograd
    through ``where``/``pow``/``sum`` makes four passes forward and four back over them, this makes
    three and one. ``torch.where``, not a multiplication, drops entries, so NaN or -inf in them (masked
    pre-softmax scores) reaches neither the value nor the gradient.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, student: Tensor, teacher: Tensor, keep: Tensor, kept: Tensor
    ) -> Tensor:
        diff = torch.where(keep, student.float() - teacher.float(), 0.0)
        count = kept.clamp_min(1).float()
        ctx.save_for_backward(diff, count)
        ctx.dtype = student.dtype  # type: ignore[attr-defined]
        flat = diff.reshape(-1)
        return torch.dot(flat, flat) / count

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        diff, count = ctx.saved_tensors  # type: ignore[attr-defined]
        dtype = ctx.dtype  # type: ignore[attr-defined]
        return (diff * (2 * grad.float() / count)).to(dtype), None, None, None
