"""Hidden-state matching: per-token MSE over the layer pairs of a map (`distil.models.layer_maps`).

Used by layer-wise distillation (LWD: a learned student projection against raw teacher states) and TED
(task-aware filters on both sides; Liang et al., "Less is More: Task-aware Layer-wise Distillation for
Language Model Compression", ICML 2023, https://arxiv.org/abs/2210.01351). Losses are computed in
float32 and the teacher side is detached. Layer numbers are 1-indexed: layer ``k`` is
``hidden_states[k]``, and the embedding output (index 0) is never part of a map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["hidden_mse", "mapped_hidden_mse"]


def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between two sequences of vectors, averaged over tokens and features.

    Without a mask every element counts, padding included: this is the normalisation of TED's released
    code (one mean over batch x sequence x features), which its large ``mse_alpha`` values assume. With a
    mask the mean runs over the real tokens only (and all features).

    Args:
        student: ``[B, S, D]`` student vectors (e.g. filtered or projected hidden states).
        teacher: ``[B, S, D]``, same shape; no gradient flows into it.
        mask: ``[B, S]``; non-zero marks tokens that count. Masked-out positions are never read, so
            padding may hold anything.

    Returns:
        A float32 scalar; 0 (still attached to the student's graph) when the mask selects nothing.

    Raises:
        ValueError: Shapes differ or the mask does not match ``[B, S]``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"hidden_mse: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}.")
    s, t = student.float(), teacher.detach().float()
    if mask is not None:
        if mask.shape != student.shape[:-1]:
            raise ValueError(
                f"hidden_mse: mask {tuple(mask.shape)} must match the vectors without the feature axis "
                f"{tuple(student.shape[:-1])}."
            )
        keep = mask.bool()
        # Selecting tokens (rather than zeroing their error) keeps NaN/inf padding out of the backward pass.
        s, t = s[keep], t[keep]
        if s.numel() == 0:
            return student.float().sum() * 0.0
    return (s - t).pow(2).mean()


def mapped_hidden_mse(
    student: Sequence[Tensor], teacher: Sequence[Tensor], mask: Tensor | None = None
) -> Tensor:
    """``(1/K) sum_k hidden_mse(student[k], teacher[k], mask)``: the mean over K paired layers.

    Args:
        student: K tensors ``[B, S, D]``, one per student layer, already mapped to the teacher's space
            (TED's student filters, LWD's projections).
        teacher: K tensors of the same shapes, the targets of the paired teacher layers.
        mask: Optional ``[B, S]`` token mask, as in `hidden_mse`.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: No pairs, or the two lists differ in length.
    """
    if not student or len(student) != len(teacher):
        raise ValueError(f"mapped_hidden_mse: {len(student)} student vs {len(teacher)} teacher tensors.")
    losses = [hidden_mse(s, t, mask) for s, t in zip(student, teacher, strict=True)]
    return torch.stack(losses).mean()
