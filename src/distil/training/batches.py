"""The training data pipeline: this process's micro-batches of each step, from a ``DataLoader``.

Batches are global and deterministic: an epoch's order is a function of ``(seed, epoch)``
(`distil.data.batching.epoch_batches`), and each global batch is cut into ``world_size x grad_accum``
micro-batches, of which process ``r`` takes every ``world_size``-th. The loader's unit is a *step*: the
dataset maps a position ``(epoch, batch)`` to this process's collated micro-batches of that global batch,
and the sampler lists positions from where the run stands. Resume is exact because a position names the
same batch in any process and after any restart; workers, pinned memory and prefetching change nothing
but speed. Sequence lengths come from the Arrow offsets, never from token lists in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from distil.data.batching import epoch_batches
from distil.types import Batch

__all__ = ["StepBatch", "StepSchedule", "step_loader"]


@dataclass
class StepBatch:
    """This process's share of one global batch.

    Attributes:
        micro: Its micro-batches, in order (the last one reduces gradients).
        shares: Each micro-batch's share of the global batch (examples / global examples).
        epoch: The epoch of the global batch.
        index: The batch's index in its epoch.
        last_in_epoch: It is the epoch's last batch.
        examples: Examples in the global batch.
    """

    micro: list[Batch]
    shares: list[float]
    epoch: int
    index: int
    last_in_epoch: bool
    examples: int

    def pin_memory(self) -> StepBatch:
        """Page-locked copies, so copies to the GPU can overlap compute (``DataLoader(pin_memory=True)``)."""
        self.micro = [b.pin_memory() for b in self.micro]
        return self


@dataclass(frozen=True)
class StepSchedule:
    """How global batches are cut (the same in every process).

    Attributes:
        lengths: Token count of each training row.
        batch_size: Examples per process per micro-batch.
        world: Processes.
        grad_accum: Micro-batches per process per step.
        seed: Seed of the batch order.
        group_by_length: Batch rows of similar length together.
    """

    lengths: np.ndarray
    batch_size: int
    world: int
    grad_accum: int
    seed: int
    group_by_length: bool

    @property
    def global_batch(self) -> int:
        """Examples per optimiser step."""
        return self.batch_size * self.world * self.grad_accum

    @property
    def parts(self) -> int:
        """Micro-batches per global batch (every process takes ``grad_accum`` of them)."""
        return self.world * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: the full ones, and the last short one if every micro-batch gets a row."""
        n = len(self.lengths)
        return n // self.global_batch + (1 if n % self.global_batch >= self.parts else 0)

    def epoch(self, epoch: int) -> list[list[int]]:
        """Every global batch of an epoch, as row indices.

        The epoch's last short batch is cut like the others into ``world x grad_accum`` micro-batches (of
        near-equal sizes), so one process at batch 8 and two at batch 4 train on the same examples; it is
        dropped only when it has fewer rows than micro-batches.
        """
        return epoch_batches(
            self.lengths, self.global_batch, seed=self.seed, epoch=epoch,
            group_by_length=self.group_by_length, min_last=self.parts,
        )  # fmt: skip

    def micro_batches(self, indices: list[int]) -> list[list[int]]:
        """A global batch cut into ``parts`` micro-batches of near-equal sizes (``batch_size`` when full)."""
        return [chunk.tolist() for chunk in np.array_split(np.asarray(indices, dtype=np.int64), self.parts)]


class _Steps(torch.utils.data.Dataset[StepBatch]):
    """Position ``(epoch, batch)`` -> this process's collated micro-batches of that global batch."""

    def __init__(
        self,
        schedule: StepSchedule,
        rank: int,
        rows: Dataset,
        collate: Callable[[list[dict[str, Any]]], Batch],
    ) -> None:
        self.schedule, self.rank, self.rows, self.collate = schedule, rank, rows, collate
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:  # each worker keeps the epoch it is in
            self._epoch = (epoch, self.schedule.epoch(epoch))
        return self._epoch[1]

    def __getitem__(self, position: tuple[int, int]) -> StepBatch:
        epoch, index = position
        batches = self._batches(epoch)
        indices = batches[index]
        mine = self.schedule.micro_batches(indices)[self.rank :: self.schedule.world]
        micro = [self.collate([self.rows[int(i)] for i in chunk]) for chunk in mine]
        shares = [len(chunk) / len(indices) for chunk in mine]
        return StepBatch(micro, shares, epoch, index, index == len(batches) - 1, len(indices))

    def __len__(self) -> int:
        return self.schedule.steps_per_epoch


class _Positions(Sampler[tuple[int, int]]):
    """Positions ``(epoch, batch)`` from a start position until ``total`` steps are taken."""

    def __init__(self, schedule: StepSchedule, start: tuple[int, int], steps: int) -> None:
        self.schedule, self.start, self.steps = schedule, start, steps

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, index = self.start
        per_epoch = self.schedule.steps_per_epoch
        for _ in range(self.steps):
            if index >= per_epoch:
                epoch, index = epoch + 1, 0
            yield epoch, index
            index += 1

    def __len__(self) -> int:
        return self.steps


def step_loader(
    schedule: StepSchedule,
    rows: Dataset,
    collate: Callable[[list[dict[str, Any]]], Batch],
    *,
    rank: int,
    start: tuple[int, int],
    steps: int,
    workers: int,
    pin_memory: bool,
) -> DataLoader[StepBatch]:
    """A loader of ``steps`` step batches from position ``start`` (epoch, batch index)."""
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers:
        kwargs |= {"prefetch_factor": 2, "persistent_workers": False}
    return DataLoader(
        _Steps(schedule, rank, rows, collate),
        sampler=_Positions(schedule, start, steps),
        batch_size=None,
        collate_fn=_identity,
        # Its own generator: starting an iterator would otherwise draw from the global RNG, whose state
        # (dropout, masking) a resumed run restores exactly. Workers draw nothing.
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def _identity(item: Any) -> Any:
    return item  # with batch_size=None each item is one step, already collated
