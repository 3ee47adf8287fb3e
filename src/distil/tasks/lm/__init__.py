"""Causal language modelling.

The task (task.py; token blocks as a corpus makes them) and sliding-window perplexity (perplexity.py).
"""

from __future__ import annotations

from distil.tasks.lm.task import LMData, LMTask

__all__ = ["LMData", "LMTask"]
