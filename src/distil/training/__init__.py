"""The shared training loop and what it needs: optimisation, checkpoints, logging, export.

``train`` (one run) is importable from here; it loads the loop on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["RunResult", "train"]

if TYPE_CHECKING:
    from distil.training.loop import RunResult, train


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'distil.training' has no attribute {name!r}")
    return getattr(importlib.import_module("distil.training.loop"), name)
