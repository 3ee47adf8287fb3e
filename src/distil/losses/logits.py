"""Losses on model outputs: soft-target KL (Hinton et al., 2015), logit MSE and the task loss.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015,
https://arxiv.org/abs/1503.02531. All losses are computed in float32 whatever the input dtype, and the
teacher side is detached.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.baselines import IGNORE_INDEX

__all__ = ["kd_kl", "logit_mse", "row_chunks", "selected_rows", "soft_target_mask", "task_loss"]


def soft_target_mask(labels: Tensor | None, logits: Tensor) -> Tensor | None:
    """Positions whose soft targets count in ``kd_kl``: those with a label, for per-position logits.

    Causal-LM labels are already shifted (``labels[:, t]`` is token ``t + 1``), so the KL at position
    ``t`` (both models' distributions over token ``t + 1``) counts exactly where the next-token loss does:
    not at the last position and not on padding. QA labels are never ignored, so every start/end row
    counts, as in the released TED code.

    Args:
        labels: The batch's labels, if any.
        logits: The student's logits.

    Returns:
        ``labels != -100`` when ``logits`` is ``[..., C]`` with per-position ``labels`` of shape
        ``logits.shape[:-1]`` and more than one leading axis; ``None`` otherwise (class logits).
    """
    if logits.ndim < 3 or labels is None or tuple(labels.shape) != tuple(logits.shape[:-1]):
        return None
    return labels != IGNORE_INDEX


def selected_rows(
    name: str, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Both logits as ``[rows, classes]`` (the teacher's detached) and the indices of the rows that count.

    Selecting rows (rather than zeroing their loss) keeps NaN/inf padding out of the backward pass.

    Raises:
        ValueError: Shapes differ, the mask does not match the logits without the class axis, or
            ``temperature <= 0``; the message starts with ``name``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{name}: student {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}."
        )
    if temperature <= 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}.")
    num_classes = student_logits.shape[-1]
    student = student_logits.reshape(-1, num_classes)
    teacher = teacher_logits.detach().reshape(-1, num_classes)
    if mask is None:
        return student, teacher, torch.arange(student.shape[0], device=student.device)
    if mask.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"{name}: mask {tuple(mask.shape)} must match the logits without the class axis "
            f"{tuple(student_logits.shape[:-1])}."
        )
    return student, teacher, mask.reshape(-1).bool().nonzero().flatten()


def row_chunks(
    student: Tensor, teacher: Tensor, rows: Tensor, chunk: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The selected ``rows`` of ``[rows, classes]`` logits, ``chunk`` at a time.

    Yields ``(index, student, teacher)``, both sides as float32 tensors of their own (a caller may mark
    the student's as requiring grad).
    """
    for start in range(0, rows.numel(), chunk):
        index = rows[start : start + chunk]
        yield index, student.index_select(0, index).float(), teacher.index_select(0, index).float()


# Rows per chunk of the KL: about 4M logits (16 MB in float32) at a time, whatever the vocabulary (32
# rows of a 128k vocabulary); a chunk's few float32 temporaries stay small beside the logits themselves.
_CHUNK_ELEMENTS = 2**22


class _ChunkedKL(torch.autograd.Function):
    """``T^2 * sum_rows KL(softmax(t/T) || softmax(s/T)) / n`` over selected rows, in chunks of rows.

    Neither pass keeps a ``[rows, classes]`` float32 intermediate: the forward sums chunk by chunk and the
    backward recomputes each chunk's softmaxes to write ``T * (softmax(s/T) - softmax(t/T)) / n`` into the
    gradient. Peak extra memory is a few chunks, not several copies of the logits (a 128k vocabulary over
    a few thousand tokens is gigabytes per copy).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: Tensor,
        teacher: Tensor,
        rows: Tensor,
        temperature: float,
        chunk: int,
    ) -> Tensor:
        total = torch.zeros((), device=student.device, dtype=torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            for _, s, t in row_chunks(student, teacher, rows, chunk):
                log_p_t = F.log_softmax(t / temperature, dim=-1)
                kl = (log_p_t.exp() * (log_p_t - F.log_softmax(s / temperature, dim=-1))).sum()
                total += kl
        ctx.save_for_backward(student, teacher, rows)
        ctx.temperature, ctx.chunk = temperature, chunk  # type: ignore[attr-defined]
        return total * temperature**2 / max(rows.numel(), 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        student, teacher, rows = ctx.saved_tensors  # type: ignore[attr-defined]
        temperature, chunk = ctx.temperature, ctx.chunk  # type: ignore[attr-defined]
        grad = torch.zeros_like(student)
        scale = grad_total.float() * temperature / max(rows.numel(), 1)
        with torch.autocast(student.device.type, enabled=False):
            for index, s, t in row_chunks(student, teacher, rows, chunk):
                p_s, p_t = F.softmax(s / temperature, dim=-1), F.softmax(t / temperature, dim=-1)
                grad.index_copy_(0, index, ((p_s - p_t) * scale).to(grad.dtype))
        return grad, None, None, None, None


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Soft-target loss ``T^2 * KL(softmax(t / T) || softmax(s / T))``.

    The KL is summed over classes and averaged over examples, where every position of the leading
    dimensions is one example: ``[B, C]`` logits average over ``B`` (``reduction="batchmean"``), and
    ``[B, S, V]`` token logits average over the ``B * S`` positions, or over the masked-in ones when
    ``mask`` is given. The ``T^2`` factor keeps gradient magnitudes comparable across temperatures
    (Hinton et al., 2015, §2). It is computed in chunks of rows with a recomputing backward
    (`_ChunkedKL`), so token-level KD over a large vocabulary never holds the float32 probabilities of all
    tokens at once; value and gradient equal the direct computation (tested).

    Args:
        student_logits: ``[..., C]``.
        teacher_logits: ``[..., C]``, same shape; no gradient flows into it.
        temperature: Softening temperature ``T > 0``.
        mask: ``[...]`` (the logits' shape without the class axis); non-zero marks positions that count.
            Values at masked-out positions are never read, so padding may hold anything.

    Returns:
        A float32 scalar; 0 (still attached to the student's graph) when the mask selects nothing.

    Raises:
        ValueError: Shapes differ, the mask shape does not match, or ``temperature <= 0``.
    """
    student, teacher, rows = selected_rows("kd_kl", student_logits, teacher_logits, mask, temperature)
    if rows.numel() == 0:
        return student.float().sum() * 0.0
    chunk = max(1, _CHUNK_ELEMENTS // student.shape[-1])
    result: Tensor = _ChunkedKL.apply(student, teacher, rows, float(temperature), chunk)
    return result


def logit_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between student and teacher outputs (regression KD), in float32.

    Args:
        student: ``[...]`` student outputs, e.g. ``[B, 1]`` regression logits.
        teacher: Same shape; no gradient flows into it.

    Returns:
        A float32 scalar, the mean over all elements.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"logit_mse: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}.")
    return F.mse_loss(student.float(), teacher.detach().float())


def task_loss(logits: Tensor, labels: Tensor, is_regression: bool) -> Tensor:
    """The supervised loss: cross-entropy for classification, MSE for regression, in float32.

    Args:
        logits: ``[B, C]`` class logits (or ``[B, S, C]`` with ``[B, S]`` labels, ``-100`` ignored), or
            ``[B, 1]`` / ``[B]`` regression outputs.
        labels: ``[B]`` class indices or regression targets.
        is_regression: Use MSE instead of cross-entropy.

    Returns:
        A float32 scalar averaged over examples.
    """
    if is_regression:
        prediction = logits.squeeze(-1) if logits.ndim > 1 and logits.shape[-1] == 1 else logits
        return F.mse_loss(prediction.float(), labels.to(torch.float32).reshape(prediction.shape))
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).long())
