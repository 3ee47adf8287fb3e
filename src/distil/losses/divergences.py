"""The divergence family for token- and class-level distillation, chunked over rows.

``p`` is the teacher's distribution and ``q`` the student's, both ``softmax(logits / T)``:

- ``forward_kl``: ``KL(p || q)``, mass-covering (Hinton et al., 2015; what `kd_kl` computes).
- ``reverse_kl``: ``KL(q || p)``, mode-seeking (Gu et al., MiniLLM, 2024).
- ``jsd``: the generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024) with mixture
  ``m = beta * p + (1 - beta) * q``: ``beta * KL(p || m) + (1 - beta) * KL(q || m)``; as in TRL's
  ``GKDTrainer``, ``beta = 0`` is taken to mean forward KL and ``beta = 1`` reverse KL (the mixture form
  vanishes at both ends).
- ``skew_kl``: ``KL(p || alpha * p + (1 - alpha) * q)`` and ``skew_reverse_kl``:
  ``KL(q || (1 - alpha) * p + alpha * q)`` (Ko et al., DistiLLM, 2024).
- ``tv``: total variation ``0.5 * sum |p - q|``.

Every value is summed over the vocabulary, multiplied by ``T^2`` (as `kd_kl`, so gradient sizes do not
change with ``T``), and averaged over the selected rows. Rows are processed in chunks of at most
``_CHUNK_ELEMENTS`` logits, forward and backward (the backward recomputes each chunk), so no float32
``[rows, vocab]`` intermediate of the whole batch is ever held, at any vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.logits import row_chunks, selected_rows

__all__ = ["DIVERGENCES", "Divergence", "divergence"]

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv")

_CHUNK_ELEMENTS = 2**22  # logits per chunk (16 MB in float32), as `kd_kl`


def _kl_logs(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``sum a * (log a - log b)`` per row, from log-probabilities (``0 * log 0`` counted as 0).

    Clamping keeps a class with ``-inf`` logits in both models (a masked vocabulary entry) at a finite
    ``0 * (min - min)`` instead of ``0 * nan``, in the value and in the gradient.
    """
    low = torch.finfo(log_a.dtype).min
    log_a, log_b = log_a.clamp(min=low), log_b.clamp(min=low)
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _mixture(log_p: Tensor, log_q: Tensor, weight_p: float) -> Tensor:
    """``log(weight_p * p + (1 - weight_p) * q)``, computed in log space.

    Inputs are clamped to the dtype's lowest value: ``logaddexp(-inf, -inf)`` has a NaN gradient.
    """
    low = torch.finfo(log_p.dtype).min
    return torch.logaddexp(
        log_p.clamp(min=low) + math.log(weight_p), log_q.clamp(min=low) + math.log1p(-weight_p)
    )


def _rows_divergence(kind: str, s: Tensor, t: Tensor, coefficient: float) -> Tensor:
    """The divergence of each row of float32 logits ``s`` (student) and ``t`` (teacher), already / T."""
    log_q, log_p = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    if kind == "forward_kl" or (kind == "jsd" and coefficient == 0.0):
        return _kl_logs(log_p, log_q)
    if kind == "reverse_kl" or (kind == "jsd" and coefficient == 1.0):
        return _kl_logs(log_q, log_p)
    if kind == "jsd":
        log_m = _mixture(log_p, log_q, coefficient)
        return coefficient * _kl_logs(log_p, log_m) + (1 - coefficient) * _kl_logs(log_q, log_m)
    if kind == "skew_kl":
        return _kl_logs(log_p, _mixture(log_p, log_q, coefficient))
    if kind == "skew_reverse_kl":
        return _kl_logs(log_q, _mixture(log_p, log_q, 1 - coefficient))
    if kind == "tv":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ValueError(f"Unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}.")


class _ChunkedDivergence(torch.autograd.Function):
    """Sum of a row divergence over selected rows, chunk by chunk; the backward recomputes each chunk."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: Tensor,
        teacher: Tensor,
        rows: Tensor,
        row_fn: Callable[[Tensor, Tensor], Tensor],
        temperature: float,
        chunk: int,
    ) -> Tensor:
        total = torch.zeros((), device=student.device, dtype=torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            for _, s, t in row_chunks(student, teacher, rows, chunk):
                total += row_fn(s / temperature, t / temperature).sum()
        ctx.save_for_backward(student, teacher, rows)
        ctx.row_fn, ctx.temperature, ctx.chunk = row_fn, temperature, chunk  # type: ignore[attr-defined]
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        student, teacher, rows = ctx.saved_tensors  # type: ignore[attr-defined]
        row_fn, temperature, chunk = ctx.row_fn, ctx.temperature, ctx.chunk  # type: ignore[attr-defined]
        grad = torch.zeros_like(student)
        with torch.autocast(student.device.type, enabled=False), torch.enable_grad():
            for index, s, t in row_chunks(student, teacher, rows, chunk):
                s.requires_grad_(True)
                value = row_fn(s / temperature, t / temperature).sum()
                (chunk_grad,) = torch.autograd.grad(value, s)
                grad.index_copy_(0, index, (chunk_grad * grad_total.float()).to(grad.dtype))
        return grad, None, None, None, None, None


def divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: Divergence = "forward_kl",
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> Tensor:
    """``T^2`` times a divergence between the teacher's and the student's softened distributions.

    Args:
        student_logits: ``[..., V]``.
        teacher_logits: ``[..., V]``, same shape; no gradient flows into it.
        kind: Which divergence (module docstring).
        temperature: Softening temperature ``T > 0`` of both models.
        mask: ``[...]`` (the logits' shape without the class axis); non-zero marks rows that count.
            Masked-out rows are never read, so padding may hold anything.
        beta: ``jsd``'s mixture weight of the teacher, in ``[0, 1]``.
        alpha: ``skew_kl`` / ``skew_reverse_kl``'s skew, in ``(0, 1)``.

    Returns:
        A float32 scalar: the mean over the selected rows; 0 (attached to the student's graph) when the
        mask selects nothing.

    Raises:
        ValueError: Shapes differ, the mask does not match, an unknown kind, or a coefficient out of range.
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"Unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}.")
    if not 0 <= beta <= 1:
        raise ValueError(f"divergence: beta must be in [0, 1], got {beta}.")
    if not 0 < alpha < 1:
        raise ValueError(f"divergence: alpha must be in (0, 1), got {alpha}.")
    student, teacher, rows = selected_rows("divergence", student_logits, teacher_logits, mask, temperature)
    vocab = student.shape[-1]
    if rows.numel() == 0:
        return student.float().sum() * 0.0
    coefficient = beta if kind == "jsd" else alpha

    def row_fn(s: Tensor, t: Tensor) -> Tensor:
        return _rows_divergence(kind, s, t, coefficient)

    chunk = max(1, _CHUNK_ELEMENTS // vocab)
    total: Tensor = _ChunkedDivergence.apply(student, teacher, rows, row_fn, float(temperature), chunk)
    return total * temperature**2 / rows.numel()
