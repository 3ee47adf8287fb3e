"""Token-level KD against a cached top-k teacher: the KL over the k tokens plus one "rest" outcome.

A top-k cache keeps, per token, the teacher's k largest logits ``z_K`` and the log-mass of the others at
the loss's temperature, ``r_T = log sum_{j not in K} exp(z_j / T)``. Both distributions are then compared
over ``K`` plus one outcome, "any other token":

    p = softmax([z_K / T, r_T])              (the tempered teacher, exactly)
    q = [q_K, q_rest],  q = softmax(s / T)   (the student over its whole vocabulary, q_rest = 1 - sum q_K)
    loss = T^2 * KL(p || q), averaged over the selected positions.

This is the KL of the two tempered distributions after merging the tail into one outcome, so it never
exceeds the full KL (merging outcomes cannot increase a divergence), its gradient moves the student's
total tail mass toward the teacher's without imposing a tail shape the cache does not know, and with
``k`` equal to the vocabulary (no rest) it *is* the full KL (tested). The tail must be summed at the
loss's temperature: ``r_1 / T`` in its place would hold one token's tempered mass for the whole tail,
which at T = 2 over a 30k vocabulary leaves the teacher almost no tail and drives the student's tail
mass to zero (measured: the student's next-token loss rose from 6.5 to 8.8). The cache is therefore
keyed by the temperature (`distil.training.topk_cache`).

The gradient has a closed form, computed chunk by chunk like `distil.losses.kd_kl`:
``dL/ds_j = T * (q_j - p_j)`` for ``j`` in ``K`` and ``T * q_j * (1 - p_rest / q_rest)`` outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.logits import _CHUNK_ELEMENTS

__all__ = ["topk_kd_kl"]


def _tail_terms(u: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """``log q`` of the student (float32, ``[rows, V]``) and ``log q_rest`` (``[rows]``)."""
    log_q = F.log_softmax(u, dim=-1)
    masked = log_q.scatter(-1, index, float("-inf"))
    return log_q, torch.logsumexp(masked, dim=-1)


def _teacher(values: Tensor, rest: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``log p_K`` and ``log p_rest`` of the tempered teacher over K plus the rest (``rest`` is tempered)."""
    joint = torch.cat([values.float() / temperature, rest.float().unsqueeze(-1)], dim=-1)
    log_p = F.log_softmax(joint, dim=-1)
    return log_p[:, :-1], log_p[:, -1]


def _chunk(
    student: Tensor,
    rows: Tensor,
    index: Tensor,
    values: Tensor,
    rest: Tensor,
    temperature: float,
    part: slice,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One chunk's top-k ids and log-probabilities: ``(ids, log q, log q_rest, log p_K, log p_rest)``.

    Both passes recompute them (the backward keeps nothing of the forward's chunks).
    """
    idx = index[part]
    s = student.index_select(0, rows[part]).float() / temperature
    log_q, log_q_rest = _tail_terms(s, idx)
    log_p, log_p_rest = _teacher(values[part], rest[part], temperature)
    return idx, log_q, log_q_rest, log_p, log_p_rest


class _ChunkedTopKL(torch.autograd.Function):
    """The loss over selected rows of ``student``, chunk by chunk, with a recomputing closed-form backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: Tensor,
        rows: Tensor,
        index: Tensor,
        values: Tensor,
        rest: Tensor,
        temperature: float,
        chunk: int,
    ) -> Tensor:
        total = torch.zeros((), device=student.device, dtype=torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            for start in range(0, rows.numel(), chunk):
                part = slice(start, start + chunk)
                idx, log_q, log_q_rest, log_p, log_p_rest = _chunk(
                    student, rows, index, values, rest, temperature, part
                )
                top = (log_p.exp() * (log_p - log_q.gather(-1, idx))).sum()
                p_rest = log_p_rest.exp()
                # An empty tail (k = V) has p_rest = 0: no term, whatever log q_rest is.
                tail = torch.where(p_rest > 0, p_rest * (log_p_rest - log_q_rest), 0.0).sum()
                total += top + tail
        ctx.save_for_backward(student, rows, index, values, rest)
        ctx.temperature, ctx.chunk = temperature, chunk  # type: ignore[attr-defined]
        return total * temperature**2 / max(rows.numel(), 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        student, rows, index, values, rest = ctx.saved_tensors  # type: ignore[attr-defined]
        temperature, chunk = ctx.temperature, ctx.chunk  # type: ignore[attr-defined]
        grad = torch.zeros_like(student)
        scale = grad_total.float() * temperature / max(rows.numel(), 1)
        with torch.autocast(student.device.type, enabled=False):
            for start in range(0, rows.numel(), chunk):
                part = slice(start, start + chunk)
                idx, log_q, log_q_rest, log_p, log_p_rest = _chunk(
                    student, rows, index, values, rest, temperature, part
                )
                q = log_q.exp()
                # Outside K: q_j * (1 - p_rest / q_rest); inside K: q_j - p_j.
                ratio = torch.where(log_p_rest.exp() > 0, (log_p_rest - log_q_rest).exp(), 0.0)
                g = q * (1 - ratio.unsqueeze(-1))
                g.scatter_(-1, idx, q.gather(-1, idx) - log_p.exp())
                grad.index_copy_(0, rows[part], (g * scale).to(grad.dtype))
        return grad, None, None, None, None, None, None


def topk_kd_kl(
    student_logits: Tensor,
    index: Tensor,
    values: Tensor,
    rest: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """``T^2 * KL(p || q)`` over the teacher's top-k tokens plus the rest (see the module docstring).

    Args:
        student_logits: ``[..., V]``.
        index: ``[..., k]`` the teacher's top-k token ids.
        values: ``[..., k]`` their logits.
        rest: ``[...]`` the log-mass of the other tokens at ``temperature``, ``logsumexp`` of their
            logits divided by it (``-inf`` when ``k = V``).
        temperature: ``T > 0``.
        mask: ``[...]``; non-zero marks the positions that count (padding is never read).

    Returns:
        A float32 scalar, averaged over the selected positions; 0 (attached) when none is selected.

    Raises:
        ValueError: Shapes do not fit or ``temperature <= 0``.
    """
    lead = student_logits.shape[:-1]
    if index.shape != values.shape or index.shape[:-1] != lead or rest.shape != lead:
        raise ValueError(
            f"topk_kd_kl: student {tuple(student_logits.shape)}, index {tuple(index.shape)}, values "
            f"{tuple(values.shape)} and rest {tuple(rest.shape)} do not fit together."
        )
    if temperature <= 0:
        raise ValueError(f"topk_kd_kl: temperature must be > 0, got {temperature}.")
    vocab, k = student_logits.shape[-1], index.shape[-1]
    student = student_logits.reshape(-1, vocab)
    if mask is not None:
        rows = mask.reshape(-1).bool().nonzero().flatten()
    else:
        rows = torch.arange(student.shape[0], device=student.device)
    if rows.numel() == 0:
        return student.float().sum() * 0.0
    picked = (
        index.reshape(-1, k).long().index_select(0, rows),
        values.detach().reshape(-1, k).index_select(0, rows),
        rest.detach().reshape(-1).index_select(0, rows),
    )
    chunk = max(1, _CHUNK_ELEMENTS // vocab)
    result: Tensor = _ChunkedTopKL.apply(student, rows, *picked, float(temperature), chunk)
    return result
