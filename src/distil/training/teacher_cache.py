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
from distil.evaluation.shards import Shard
from distil.progress import Phase
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
        shard: Shard | None = None,
    ) -> TeacherCache:
        """Run the teacher once over ``dataset`` (in length order, to pad little).

        With several processes each runs its share of the batches (``shard``) and every process gets the
        whole table.
        """
        shard = shard or Shard()
        teacher.eval()
        idx_all = np.asarray(dataset["idx"][:])
        batches = list(length_sorted_batches(dataset, batch_size))
        mine, padding = shard.take(batches)
        done: list[tuple[np.ndarray, np.ndarray]] = []
        todo = [*mine, *batches[:1] * padding]
        phase = Phase("caching teacher logits", len(todo), enabled=shard.rank == 0)
        for n, rows in enumerate(todo):
            batch = collate([dataset[int(i)] for i in rows])
            out = teacher(**{k: v.to(device) for k, v in model_inputs(teacher, batch).items()}).logits
            if n < len(mine):  # padding passes keep every process's forward passes in step (FSDP)
                done.append((idx_all[rows], out.float().cpu().numpy()))
            phase.update()
        phase.close()
        parts = [item for part in shard.gather(done) for item in part]
        assert parts, "empty training set"
        logits = torch.zeros(int(idx_all.max()) + 1, *parts[0][1].shape[1:])
        for idx, values in parts:
            logits[torch.as_tensor(idx)] = torch.from_numpy(values)
        return cls(logits, device)

    def features(self, batch: Batch) -> Features:
        """The cached teacher logits of a batch, as the ``Features`` a forward pass would give."""
        assert batch.idx is not None
        return Features(attention_mask=batch.attention_mask, logits=self.logits[batch.idx])
