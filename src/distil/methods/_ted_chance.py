"""What a TED filter that learned nothing scores: the task loss of a head that ignores its input.

A filter's head that reads nothing from its layer can still learn the training labels' prior, so chance
is the loss of predicting that prior, per head kind (`distil.methods._ted_heads.HeadKind`):

- classification: the entropy of the class prior (ln C when balanced; MRPC's 68/32 gives 0.627);
- regression: the variance of the targets (the MSE of always predicting their mean);
- extractive QA: the mean entropy of the start-position and end-position priors (the loss is
  ``(CE_start + CE_end) / 2``), positions counted over the whole window;
- causal LM: the entropy of the unigram prior of the predicted tokens (a head that always predicts
  token frequencies), positions without a next token (``-100``) left out.

The statistics are kept on the device and read once, at the end of the stage.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["LabelPrior"]

PriorKind = Literal["classes", "mean", "positions", "tokens"]

_WHAT: dict[PriorKind, str] = {
    "classes": "predicting the class prior",
    "mean": "predicting the mean target",
    "positions": "predicting the answer-position prior",
    "tokens": "predicting the unigram token prior",
}


def _entropy(counts: Tensor) -> float:
    """Entropy (nats) of the distribution the counts in the last dimension give, averaged over the rest."""
    counts = counts.double()
    total = counts.sum(-1, keepdim=True)
    p = counts / total.clamp(min=1)
    terms = torch.where(p > 0, -p * p.clamp(min=1e-300).log(), torch.zeros_like(p))
    return float(terms.sum(-1).mean())


class LabelPrior:
    """Running statistics of the training labels and the chance-level loss they give.

    Args:
        kind: ``seq``, ``qa`` or ``lm`` (the filter heads' kind).
        is_regression: A ``seq`` task with one real-valued target.
        num_labels: Classes of a ``seq`` classification task.
    """

    def __init__(self, kind: str, is_regression: bool, num_labels: int) -> None:
        seq: PriorKind = "mean" if is_regression else "classes"
        self.kind: PriorKind = "positions" if kind == "qa" else "tokens" if kind == "lm" else seq
        self.num_labels = num_labels
        self._stats: Tensor | None = None  # counts, or [n, sum, sum of squares] for "mean"

    @property
    def what(self) -> str:
        """What chance means for this kind, in words."""
        return _WHAT[self.kind]

    def update(self, labels: Tensor, logits: Tensor) -> None:
        """Count one batch's labels; ``logits`` gives the class, position or vocabulary count."""
        labels = labels.detach()
        if self.kind == "mean":
            y = labels.reshape(-1).double()
            batch = torch.stack([y.new_tensor(float(y.numel())), y.sum(), (y * y).sum()])
            self._stats = batch if self._stats is None else self._stats + batch
            return
        if self.kind == "positions":  # labels [B, 2] (start, end); logits [B, 2, S]
            size = max(int(logits.shape[-1]), 0 if self._stats is None else int(self._stats.shape[-1]))
            batch = torch.stack([torch.bincount(labels[:, i].long(), minlength=size) for i in range(2)])
            stats = self._stats
            if stats is not None and stats.shape[-1] < batch.shape[-1]:
                stats = torch.nn.functional.pad(stats, (0, batch.shape[-1] - stats.shape[-1]))
            self._stats = batch if stats is None else stats + batch
            return
        size = int(logits.shape[-1]) if self.kind == "tokens" else self.num_labels
        seen = labels.reshape(-1).long()
        seen = seen[seen >= 0]  # -100: no next token
        batch = torch.bincount(seen, minlength=size)
        self._stats = batch if self._stats is None else self._stats + batch

    def chance(self) -> float | None:
        """The chance-level loss; ``None`` before any label was seen or for one class."""
        stats = self._stats
        if stats is None:
            return None
        if self.kind == "mean":
            n, total, squares = (float(v) for v in stats)
            return squares / n - (total / n) ** 2 if n > 0 else None
        if self.kind == "classes" and self.num_labels < 2:
            return None
        return _entropy(stats) if int(stats.sum()) else None
