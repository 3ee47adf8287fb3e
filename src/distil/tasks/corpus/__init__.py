"""Task-agnostic distillation on unlabelled text: the task (task.py), its cached token blocks (blocks.py)."""

from __future__ import annotations

from distil.tasks.corpus.task import CorpusData, CorpusTask

__all__ = ["CorpusData", "CorpusTask"]
