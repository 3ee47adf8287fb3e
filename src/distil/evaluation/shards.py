"""Evaluation shared by the processes of a run: each scores every ``world``-th batch, results are gathered.

Every process runs the same number of forward passes (a process with fewer batches repeats a batch and
drops its outputs), as FSDP needs: its forward passes are collective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of an evaluation.

    Attributes:
        rank: This process.
        world: Processes sharing the evaluation.
        gather_fn: Every process's object, in rank order (e.g. ``DistEnv.gather_objects``); needed when
            ``world > 1``.
    """

    rank: int = 0
    world: int = 1
    gather_fn: Callable[[Any], list[Any]] | None = None

    def take(self, batches: Sequence[T]) -> tuple[list[T], int]:
        """This process's batches, and how many padding passes it runs after them."""
        mine = list(batches[self.rank :: self.world])
        rounds = -(-len(batches) // self.world)
        return mine, rounds - len(mine)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (just ``[obj]`` for one process)."""
        if self.world == 1:
            return [obj]
        assert self.gather_fn is not None, "a Shard of several processes needs gather_fn"
        return self.gather_fn(obj)
