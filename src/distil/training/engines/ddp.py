"""DDP: the step module replicated in every process, gradients all-reduced while the backward runs."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distil.errors import TrainingError
from distil.training.engines.base import Engine, StepModule, Wrapped
from distil.types import EngineTraits

__all__ = ["DDPEngine", "DDPOptions"]


@dataclass
class DDPOptions:
    """The ``engine:`` section of DDP (and of ``auto``, which is DDP over several processes).

    Attributes:
        name: ``ddp``, or ``auto``: DDP with several processes, one process's engine with one.
        find_unused_parameters: Search the autograd graph at every step for parameters without a
            gradient, for a method whose set of such parameters changes from step to step. Off (the
            default), DDP's static graph finds them once, in the first step, which every method here allows.
    """

    name: Literal["auto", "ddp"] = "auto"
    find_unused_parameters: bool = False


class DDPEngine(Engine):
    """`StepModule` wrapped by ``DistributedDataParallel``.

    ``static_graph`` is on: the parameters a method leaves without a gradient (MiniLMv2's last FFN, a task
    head no loss reads) are found in the first step, so they neither deadlock nor get a zero gradient
    (AdamW then skips them, as in one process), without ``find_unused_parameters``'s search of the graph at
    every step. Every method uses the same parameters at every step; HomoDistil's prune events, which
    change them, wrap the step module again (`rewrap`).
    """

    name = "ddp"
    traits = EngineTraits(multi_process=True)
    Options = DDPOptions
    options: DDPOptions

    def wrap(self, step: StepModule, hooked_layers: Collection[int] = ()) -> nn.Module:
        """``step`` in a DDP wrapper (gradient buckets sized to its parameters now)."""
        ids = [self.env.device.index] if self.env.device.type == "cuda" else None
        search = self.options.find_unused_parameters
        return DistributedDataParallel(
            step, device_ids=ids, static_graph=not search, find_unused_parameters=search
        )

    def rewrap(self, mods: Wrapped) -> None:
        """Wrap ``mods.step`` again after a method changed its parameters' shapes (`Method.on_step_end`).

        DDP sizes its gradient buckets to the parameters when it wraps, and its reducer holds each
        parameter's gradient accumulator, which knows the old shape (a new wrapper, or the next backward,
        would reuse it). So the old wrapper is released first, its hooks removed and the object freed, and
        the module is wrapped anew (which also checks that every process holds the same shapes).

        Raises:
            TrainingError: The old DDP wrapper outlives its release.
        """
        old = mods.wrapped
        assert isinstance(old, DistributedDataParallel)
        # DDP has no public way to drop its autograd hooks; without this the old reducer's hooks would
        # fire in the next backward, on parameters whose shapes they no longer match.
        old.reducer._remove_autograd_hooks()
        released = weakref.ref(old)
        mods.wrapped = mods.step
        del old
        gc.collect()  # DDP's wrapper sits in reference cycles
        if released() is not None:
            raise TrainingError("The DDP wrapper of the student is still referenced; cannot re-wrap it.")
        mods.wrapped = self.wrap(mods.step)

    @contextmanager
    def accumulating(self, wrapped: nn.Module, sync: bool) -> Iterator[None]:
        """All-reduce gradients only in the backward of a step's last micro-batch (``no_sync`` before)."""
        if sync:
            yield
            return
        assert isinstance(wrapped, DistributedDataParallel)
        with wrapped.no_sync():
            yield
