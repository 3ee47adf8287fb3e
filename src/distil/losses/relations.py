"""Self-attention relation losses: MiniLMv2 multi-head relations and the MiniLM v1 special cases.

MiniLMv2: Wang, Bao, Huang, Dong and Wei, "MiniLMv2: Multi-Head Self-Attention Relation Distillation for
Compressing Pretrained Transformers", Findings of ACL 2021, https://arxiv.org/abs/2012.15828 (§3.1,
Eq. 6-8). MiniLM v1: Wang, Wei, Dong, Bao, Yang and Zhou, "MiniLM: Deep Self-Attention Distillation for
Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020, https://arxiv.org/abs/2002.10957.

One relation ``(left, right)`` of one model is, for each relation head ``a``,
``R_a = softmax_row(L_a R_a^T / sqrt(d_r))``, where ``L_a`` and ``R_a`` are the ``a``-th contiguous
``d_r``-wide slices of the ``[seq, hidden]`` projection outputs. The loss is the row-wise KL from the
teacher's relation to the student's. The paper is silent on padding; following the team's method notes
(docs/methods/minilmv2.md) padded keys are masked out of both softmaxes, padded query rows are dropped,
and each sequence is normalised by ``A_r`` times its own number of real tokens. Everything is computed
in float32 with autocast disabled (§1.4), and the teacher side is detached.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["CHUNK_BYTES", "attention_kl", "relation_chunks", "relation_kl", "value_relation_kl"]

# Default upper bound, in bytes, of one float32 [batch, heads, rows, seq] tensor of a chunk when the caller
# leaves the chunk sizes to us: three such tensors are alive at once inside a chunk, so the loss stays
# under a GiB however many relation heads or tokens there are. The whole relation is one chunk when it
# fits: chunking only costs time (about 5 % of a MiniLMv2 step at batch 32 x 128 with 48 heads in two
# chunks, issue 27) and the fused closed-form gradient keeps nothing for the backward either way.
CHUNK_BYTES = 256 * 2**20

# A finite stand-in for -inf: masked logits get probability exactly 0 after the softmax, while a row whose
# keys are all masked (a padded query under a causal mask) still normalises to finite values, never NaN.
_MASKED = torch.finfo(torch.float32).min


def relation_kl(
    student_left: Tensor,
    student_right: Tensor,
    teacher_left: Tensor,
    teacher_right: Tensor,
    attention_mask: Tensor,
    num_relation_heads: int,
    *,
    causal: bool = False,
    head_chunk: int | None = None,
    row_chunk: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tensor:
    """MiniLMv2 relation loss ``L_ij`` between one teacher and one student relation (Eq. 6-8).

    ``L = 1/B Σ_b 1/(A_r · n_b) Σ_a Σ_{real t} KL(R^T_{b,a,t} || R^S_{b,a,t})``, where ``n_b`` is the
    number of real tokens of sequence ``b`` and ``R_{b,a,t}`` is row ``t`` of relation head ``a``:
    ``softmax(left_a · right_a^T / sqrt(d_r))`` over the real (and, if ``causal``, not later) keys. Each
    model scales by its own relation-head size ``d_r = hidden / A_r``. Pass the same tensor twice for the
    paper's Q-Q, K-K and V-V relations.

    The hidden axis is split into ``A_r`` contiguous slices (a ``[B, S, A_r, d_r]`` view, then a transpose),
    so a relation head may be a fragment of one attention head or span several (MiniLMv2 §4.4). Work is
    done in chunks of ``head_chunk`` relation heads by ``row_chunk`` query rows, so peak memory does not
    grow with ``A_r`` (nor with ``S`` when rows are chunked). When the student needs gradients, each chunk
    also forms its share of the gradient in closed form (``softmax(z_s) - p_t`` on the student logits)
    while its probabilities are at hand, so no chunk intermediate is kept for the backward pass and none
    is recomputed. Chunk sizes change neither the value nor the gradient beyond float32 rounding.

    Args:
        student_left: ``[B, S, D_s]`` student projection output (e.g. queries), heads contiguous.
        student_right: ``[B, S, D_s]``, same shape as ``student_left``.
        teacher_left: ``[B, S, D_t]`` teacher projection output; no gradient flows into it.
        teacher_right: ``[B, S, D_t]``, same shape as ``teacher_left``; no gradient flows into it.
        attention_mask: ``[B, S]``, non-zero for real tokens, in any positions (left or right padding).
            Values of the projections at padded positions are never read, so they may hold anything.
        num_relation_heads: ``A_r``; must divide both ``D_s`` and ``D_t``.
        causal: Also mask keys later than the query (decoder self-attention).
        head_chunk: Relation heads per chunk; ``None`` picks it so that one float32
            ``[B, head_chunk, row_chunk, S]`` tensor stays under ``chunk_bytes`` (all heads when they fit).
        row_chunk: Query rows per chunk; ``None`` keeps all rows unless one relation head alone would
            exceed that budget.
        chunk_bytes: The budget of the automatic sizes (`relation_chunks`).

    Returns:
        A float32 scalar. A sequence without real tokens contributes 0 (it still counts in the batch
        mean); an all-masked batch gives 0, still attached to the student's graph.

    Raises:
        ValueError: Shapes disagree, ``A_r`` does not divide a hidden size, or a chunk size is < 1.
    """
    return _relation_kl(
        student_left,
        student_right,
        teacher_left,
        teacher_right,
        attention_mask,
        num_relation_heads,
        causal=causal,
        head_chunk=head_chunk,
        row_chunk=row_chunk,
    )


def attention_kl(
    student_q: Tensor,
    student_k: Tensor,
    teacher_q: Tensor,
    teacher_k: Tensor,
    attention_mask: Tensor,
    num_heads_student: int,
    num_heads_teacher: int,
    *,
    causal: bool = False,
) -> Tensor:
    """MiniLM v1 self-attention distribution transfer ``L_AT`` (arXiv:2002.10957, Eq. 7).

    ``KL(A^T || A^S)`` of the attention probabilities ``softmax(Q K^T / sqrt(d_k))`` per attention head,
    normalised as in :func:`relation_kl`: it is that loss on the Q-K relation with one relation head per
    attention head. Under grouped-query attention (keys narrower than queries) each key/value head is
    repeated for the query heads that share it, as the model itself does. The projections are taken
    before any rotary embedding (see :class:`distil.types.QKV`), so for rotary models this transfers the
    content part of the attention only.

    Args:
        student_q: ``[B, S, H * d_s]`` student queries.
        student_k: ``[B, S, H_kv * d_s]`` student keys (``H_kv`` divides ``H``).
        teacher_q: ``[B, S, H * d_t]`` teacher queries; no gradient flows into it.
        teacher_k: ``[B, S, H_kv' * d_t]`` teacher keys; no gradient flows into it.
        attention_mask: ``[B, S]``, non-zero for real tokens.
        num_heads_student: Student attention (query) heads ``H``.
        num_heads_teacher: Teacher attention (query) heads; MiniLM v1 needs it equal to the student's.
        causal: Mask keys later than the query (decoders).

    Returns:
        A float32 scalar.

    Raises:
        ValueError: The head counts differ, or the shapes do not fit the head counts.
    """
    _same_heads("attention_kl", num_heads_student, num_heads_teacher)
    student_k = _repeat_kv(student_k, student_q.shape[-1], num_heads_student, "student")
    teacher_k = _repeat_kv(teacher_k, teacher_q.shape[-1], num_heads_teacher, "teacher")
    return relation_kl(
        student_q, student_k, teacher_q, teacher_k, attention_mask, num_heads_student, causal=causal
    )


def value_relation_kl(
    student_v: Tensor,
    teacher_v: Tensor,
    attention_mask: Tensor,
    num_heads_student: int,
    num_heads_teacher: int,
    *,
    causal: bool = False,
) -> Tensor:
    """MiniLM v1 value-relation transfer ``L_VR`` (arXiv:2002.10957, Eq. 8-9).

    :func:`relation_kl` on the V-V relation with one relation head per attention head, i.e.
    ``KL(softmax(V_a V_a^T / sqrt(d_k)))`` between teacher and student for each head ``a``.

    Args:
        student_v: ``[B, S, H * d_s]`` student values.
        teacher_v: ``[B, S, H * d_t]`` teacher values; no gradient flows into it.
        attention_mask: ``[B, S]``, non-zero for real tokens.
        num_heads_student: Heads of ``student_v`` (the key/value heads under grouped-query attention).
        num_heads_teacher: Heads of ``teacher_v``; MiniLM v1 needs it equal to the student's.
        causal: Mask keys later than the query (decoders).

    Returns:
        A float32 scalar.

    Raises:
        ValueError: The head counts differ, or a head count does not divide its hidden size.
    """
    _same_heads("value_relation_kl", num_heads_student, num_heads_teacher)
    return relation_kl(
        student_v, student_v, teacher_v, teacher_v, attention_mask, num_heads_student, causal=causal
    )


def _relation_kl(
    student_left: Tensor,
    student_right: Tensor,
    teacher_left: Tensor,
    teacher_right: Tensor,
    attention_mask: Tensor,
    num_relation_heads: int,
    *,
    causal: bool,
    head_chunk: int | None,
    row_chunk: int | None,
    chunk_bytes: int = CHUNK_BYTES,
    backward: Literal["fused", "checkpoint", "autograd"] = "fused",
) -> Tensor:
    """:func:`relation_kl`, with the way gradients are obtained selectable (for tests and the benchmark).

    ``backward`` only matters when the student needs gradients:

    * ``"fused"`` (what :func:`relation_kl` uses): each chunk also computes its gradient in closed form
      while its probabilities are at hand, so nothing of the chunk outlives it and nothing is recomputed.
    * ``"checkpoint"``: autograd through non-reentrant ``torch.utils.checkpoint`` per chunk; one chunk
      alive at a time too, but the backward pass recomputes every chunk's forward (about 2x the time).
    * ``"autograd"``: plain autograd, which keeps every chunk's saved tensors until the backward pass;
      with a single chunk this is the direct computation.
    """
    _check_inputs(
        student_left, student_right, teacher_left, teacher_right, attention_mask, num_relation_heads
    )
    batch, seq = attention_mask.shape
    heads = num_relation_heads
    sizes = relation_chunks(batch, seq, heads, head_chunk, row_chunk, chunk_bytes)
    device = student_left.device
    with torch.autocast(device_type=device.type, enabled=False):
        keep = attention_mask.to(device=device).bool()
        s_left = _split_heads(student_left, keep, heads, scaled=True)
        s_right = _split_heads(student_right, keep, heads, scaled=False)
        t_left = _split_heads(teacher_left.detach(), keep, heads, scaled=True)
        t_right = _split_heads(teacher_right.detach(), keep, heads, scaled=False)
        needs_grad = torch.is_grad_enabled() and (s_left.requires_grad or s_right.requires_grad)
        if needs_grad and backward == "fused":
            total = _FusedRelationKL.apply(s_left, s_right, t_left, t_right, keep, causal, sizes)
        else:
            total = torch.zeros(batch, device=device)
            use_checkpoint = needs_grad and backward == "checkpoint"
            for _, _, args in _chunk_args(s_left, s_right, t_left, t_right, keep, causal, sizes):
                if use_checkpoint:
                    # Non-reentrant checkpointing drops what the chunk saved for backward and recomputes
                    # it when the backward pass reaches the chunk.
                    part = checkpoint(_chunk_kl, *args, use_reentrant=False, preserve_rng_state=False)
                else:
                    part = _chunk_kl(*args)
                total = total + part
        # A sequence with no real token has a zero sum; clamping its count avoids 0/0.
        count = (keep.sum(dim=-1) * heads).clamp(min=1).to(torch.float32)
        return (total / count).mean()


def _chunk_args(
    s_left: Tensor,
    s_right: Tensor,
    t_left: Tensor,
    t_right: Tensor,
    keep: Tensor,
    causal: bool,
    sizes: tuple[int, int],
) -> Iterator[tuple[int, int, tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]]]:
    """Yield ``(first head, first row, arguments of _chunk_kl)`` for each chunk, heads outermost."""
    _, heads, seq, _ = s_left.shape
    heads_per_chunk, rows_per_chunk = sizes
    positions = torch.arange(seq, device=keep.device)
    for h0 in range(0, heads, heads_per_chunk):
        h1 = min(h0 + heads_per_chunk, heads)
        for r0 in range(0, seq, rows_per_chunk):
            r1 = min(r0 + rows_per_chunk, seq)
            key_ok = keep[:, None, None, :]  # [B, 1, 1, S]
            if causal:
                key_ok = key_ok & (positions[None, :] <= positions[r0:r1, None])  # [B, 1, rows, S]
            args = (
                s_left[:, h0:h1, r0:r1],
                s_right[:, h0:h1],
                t_left[:, h0:h1, r0:r1],
                t_right[:, h0:h1],
                key_ok,
                keep[:, None, r0:r1],
            )
            yield h0, r0, args


def _log_relation(left: Tensor, right: Tensor, key_ok: Tensor) -> Tensor:
    """Row log-softmax of ``left @ right^T`` over the allowed keys: ``[B, h, rows, S]``."""
    # In place on the fresh matmul output: matmul's backward needs its inputs, not its output.
    logits = torch.matmul(left, right.transpose(-1, -2)).masked_fill_(~key_ok, _MASKED)
    return F.log_softmax(logits, dim=-1)


def _chunk_kl(
    s_left: Tensor, s_right: Tensor, t_left: Tensor, t_right: Tensor, key_ok: Tensor, row_ok: Tensor
) -> Tensor:
    """Sum of KL(teacher row || student row) over one chunk's real query rows and relation heads.

    Args:
        s_left: ``[B, h, rows, d_s]`` student left side, already scaled by ``1/sqrt(d_s)``.
        s_right: ``[B, h, S, d_s]``.
        t_left: ``[B, h, rows, d_t]`` teacher left side, already scaled by ``1/sqrt(d_t)``.
        t_right: ``[B, h, S, d_t]``.
        key_ok: ``[B, 1, 1 or rows, S]``, True where the key may be attended to.
        row_ok: ``[B, 1, rows]``, True for real query rows.

    Returns:
        ``[B]`` float32 per-sequence sums.
    """
    # Checkpointing recomputes this in the backward pass, where autocast may be on again.
    with torch.autocast(device_type=s_left.device.type, enabled=False):
        with torch.no_grad():
            t_logp = _log_relation(t_left, t_right, key_ok)
            t_p = t_logp.exp()
        s_logp = _log_relation(s_left, s_right, key_ok)
        # Both log-probabilities come from log_softmax over finite logits, so they are finite and a
        # p_t = 0 entry (masked, or underflowed) contributes 0 * finite = 0; the where also pins masked
        # keys to exactly 0 whatever rounding did there.
        terms = torch.where(key_ok, t_p * (t_logp - s_logp), 0.0)
        return torch.where(row_ok, terms.sum(dim=-1), 0.0).sum(dim=(1, 2))


class _FusedRelationKL(torch.autograd.Function):
    """Per-sequence relation-KL sums whose gradient is formed chunk by chunk during the forward pass.

    With the teacher fixed and each teacher row summing to 1, the gradient of ``KL(p_t || softmax(z))``
    with respect to the student logits ``z`` is ``softmax(z) - p_t``. Each chunk turns that into the
    gradients of its slices of ``left`` and ``right`` (``G @ right`` and ``G^T @ left``) while its
    probabilities are at hand, so only ``[B, A_r, S, d_r]`` gradient buffers outlive a chunk: memory stays
    at one chunk in the backward pass too, without the recomputation that checkpointing costs.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        s_left: Tensor,
        s_right: Tensor,
        t_left: Tensor,
        t_right: Tensor,
        keep: Tensor,
        causal: bool,
        sizes: tuple[int, int],
    ) -> Tensor:
        """Return the ``[B]`` sums and keep the gradient of their total with respect to both sides."""
        total = torch.zeros(s_left.shape[0], device=s_left.device)
        grad_left = torch.zeros_like(s_left)
        grad_right = torch.zeros_like(s_right)
        for h0, r0, chunk in _chunk_args(s_left, s_right, t_left, t_right, keep, causal, sizes):
            sl, sr, tl, tr, key_ok, row_ok = chunk
            h1, r1 = h0 + sl.shape[1], r0 + sl.shape[2]
            t_logp = _log_relation(tl, tr, key_ok)
            t_p = t_logp.exp()
            s_logp = _log_relation(sl, sr, key_ok)
            # In place from here on (no autograd inside a Function's forward): the terms reuse t_logp's
            # buffer and the logit gradient reuses s_logp's, so a chunk holds three [B, h, rows, S] tensors.
            terms = t_logp.sub_(s_logp).mul_(t_p).masked_fill_(~key_ok, 0.0)
            total += terms.sum(dim=-1).masked_fill_(~row_ok, 0.0).sum(dim=(1, 2))
            del terms
            # p_s - p_t on real query rows (exactly 0 on masked keys, where both probabilities are 0).
            logit_grad = s_logp.exp_().sub_(t_p).masked_fill_(~row_ok[..., None], 0.0)
            del t_p
            grad_left[:, h0:h1, r0:r1] = logit_grad @ sr
            grad_right[:, h0:h1] += logit_grad.transpose(-1, -2) @ sl
        ctx.save_for_backward(grad_left, grad_right)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        """Scale the stored per-sequence gradients by the incoming gradient of each sequence's sum."""
        grad_left, grad_right = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad_total[:, None, None, None]
        return grad_left * scale, grad_right * scale, None, None, None, None, None


def _split_heads(x: Tensor, keep: Tensor, heads: int, *, scaled: bool) -> Tensor:
    """``[B, S, D]`` -> float32 ``[B, A_r, S, D / A_r]``, padded positions zeroed, optionally pre-scaled.

    Zeroing padded positions keeps garbage (even NaN) out of the matmuls, whose backward would otherwise
    multiply it by the zero gradient of the masked logits. Scaling one side by ``1/sqrt(d_r)`` is the
    same as scaling the logits, on a tensor ``S / d_r`` times smaller.
    """
    batch, seq, hidden = x.shape
    out = torch.where(keep[..., None], x.to(torch.float32), 0.0)
    if scaled:
        out = out * (1.0 / math.sqrt(hidden // heads))
    # Split the hidden (last) axis, then move heads forward: never reshape a heads-first tensor, which
    # would mix tokens with heads (a known error of a public re-implementation).
    return out.view(batch, seq, heads, hidden // heads).transpose(1, 2)


def relation_chunks(
    batch: int,
    seq: int,
    heads: int,
    head_chunk: int | None = None,
    row_chunk: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[int, int]:
    """``(heads per chunk, rows per chunk)`` of a relation loss, unset sizes filled from ``chunk_bytes``.

    The whole relation (all heads, all rows) when one float32 ``[B, A_r, S, S]`` tensor fits the budget;
    otherwise whole rows and as many heads as fit (so as few chunks as the budget allows), and only when
    one head alone is too large, slices of the query rows.

    Raises:
        ValueError: A given size or the budget is < 1.
    """
    for name, value in (("head_chunk", head_chunk), ("row_chunk", row_chunk)):
        if value is not None and value < 1:
            raise ValueError(f"relation_kl: {name} must be >= 1 or None, got {value}.")
    if chunk_bytes < 1:
        raise ValueError(f"relation_kl: chunk_bytes must be >= 1, got {chunk_bytes}.")
    budget = chunk_bytes // 4  # float32 elements of one [B, h, rows, S] tensor
    per_row_and_head = max(1, batch * seq)
    if row_chunk is None:
        # Keep whole rows when the chosen (or a single) head fits; otherwise slice the query rows.
        row_chunk = budget // (per_row_and_head * (head_chunk or 1))
    if head_chunk is None:
        head_chunk = budget // (per_row_and_head * max(1, min(row_chunk, seq)))
    return max(1, min(head_chunk, heads)), max(1, min(row_chunk, max(seq, 1)))


def _check_inputs(
    student_left: Tensor,
    student_right: Tensor,
    teacher_left: Tensor,
    teacher_right: Tensor,
    attention_mask: Tensor,
    heads: int,
) -> None:
    """Raise ValueError unless the shapes fit together and ``heads`` divides both hidden sizes."""
    if attention_mask.ndim != 2:
        raise ValueError(
            f"relation_kl: attention_mask must be [batch, seq], got {tuple(attention_mask.shape)}."
        )
    for side, left, right in (
        ("student", student_left, student_right),
        ("teacher", teacher_left, teacher_right),
    ):
        if left.ndim != 3 or left.shape != right.shape:
            raise ValueError(
                f"relation_kl: {side} left {tuple(left.shape)} and right {tuple(right.shape)} must both be "
                "[batch, seq, hidden] of the same hidden size (repeat grouped key/value heads first)."
            )
        if left.shape[:2] != attention_mask.shape:
            raise ValueError(
                f"relation_kl: {side} inputs {tuple(left.shape)} do not match attention_mask "
                f"{tuple(attention_mask.shape)} in [batch, seq]."
            )
    student_hidden, teacher_hidden = student_left.shape[-1], teacher_left.shape[-1]
    if heads < 1 or student_hidden % heads or teacher_hidden % heads:
        raise ValueError(
            f"relation_kl: num_relation_heads={heads} must divide both the student hidden size "
            f"{student_hidden} and the teacher hidden size {teacher_hidden}; pick a common divisor "
            "(e.g. 48 for 384/768, 64 for 384/768/1024)."
        )


def _same_heads(name: str, student: int, teacher: int) -> None:
    """Raise ValueError unless MiniLM v1's one-to-one head pairing is possible."""
    if student != teacher:
        raise ValueError(
            f"{name}: MiniLM v1 pairs attention heads one to one, but the student has {student} heads and "
            f"the teacher {teacher}. Use MiniLMv2 relation heads (relation_kl with a num_relation_heads "
            "that divides both hidden sizes), which lift this restriction."
        )


def _repeat_kv(key: Tensor, query_width: int, num_heads: int, side: str) -> Tensor:
    """Repeat grouped key heads ``[B, S, H_kv * d]`` to ``[B, S, H * d]``, as grouped-query attention does."""
    if key.shape[-1] == query_width:
        return key
    if query_width % num_heads or key.ndim != 3:
        raise ValueError(
            f"attention_kl: {side} query width {query_width} is not divisible by {num_heads} heads."
        )
    head_dim = query_width // num_heads
    kv_heads = key.shape[-1] // head_dim
    if key.shape[-1] % head_dim or kv_heads == 0 or num_heads % kv_heads:
        raise ValueError(
            f"attention_kl: {side} key width {key.shape[-1]} is not a divisor group of {num_heads} heads of "
            f"size {head_dim} (query width {query_width})."
        )
    batch, seq, _ = key.shape
    # Query head h reads key head h // (H / H_kv), the order transformers' repeat_kv produces.
    grouped = key.view(batch, seq, kv_heads, 1, head_dim).expand(
        batch, seq, kv_heads, num_heads // kv_heads, head_dim
    )
    return grouped.reshape(batch, seq, query_width)
