"""One process: the modules as they are (every default of `Engine`)."""

from __future__ import annotations

from distil.training.engines.base import Engine, SingleOptions
from distil.types import EngineTraits

__all__ = ["SingleEngine"]


class SingleEngine(Engine):
    """``engine.name=none``: one process, nothing wrapped, sharded or reduced."""

    name = "none"
    traits = EngineTraits()
    Options = SingleOptions
