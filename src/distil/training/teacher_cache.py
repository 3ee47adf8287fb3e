"""Teacher-logit caching: one teacher pass over the training set, reused every epoch.

Exact for methods that need only the teacher's logits: the teacher is frozen in eval mode, so its
logits for an example never change (up to the float noise of a different padding length).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import length_sorted_batches
from distil.types import Batch, Features

__all__ = ["TeacherCache"]


class TeacherCache:
    """Teacher logits of every training example, indexed by the batch's ``idx`` column."""

    def __init__(self, logits: torch.Tensor, device: torch.device) -> None:
        self.logits = logits.to(device)

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: PreTrainedModel,
        dataset: Dataset,
        collate: Callable[[list[dict[str, Any]]], Batch],
        batch_size: int,
        device: torch.device,
    ) -> TeacherCache:
        """Run the teacher once over ``dataset`` (in length order, to pad little)."""
        teacher.eval()
        idx_all = np.asarray(dataset["idx"][:])
        logits: torch.Tensor | None = None
        for rows in length_sorted_batches(dataset, batch_size):
            batch = collate([dataset[int(i)] for i in rows])
            out = teacher(**{k: v.to(device) for k, v in model_inputs(teacher, batch).items()}).logits.float()
            if logits is None:
                logits = torch.zeros(int(idx_all.max()) + 1, *out.shape[1:])
            logits[torch.as_tensor(idx_all[rows])] = out.cpu()
        assert logits is not None, "empty training set"
        return cls(logits, device)

    def features(self, batch: Batch) -> Features:
        """The cached teacher logits of a batch, as the ``Features`` a forward pass would give."""
        assert batch.idx is not None
        return Features(attention_mask=batch.attention_mask, logits=self.logits[batch.idx])
