"""Task data for the loop: labelled tasks and text corpora behind one ``TaskData`` protocol."""

from __future__ import annotations

from distil.config import DataConfig
from distil.tasks.base import TaskData
from distil.tasks.classification import ClassificationTask
from distil.tasks.corpus import CorpusTask

__all__ = ["ClassificationTask", "CorpusTask", "TaskData", "load_task"]


def load_task(data: DataConfig, seed: int) -> TaskData:
    """Read and validate the configured task's raw data (no tokenisation yet)."""
    if data.task == "corpus":
        return CorpusTask(data, seed)
    return ClassificationTask(data, seed)
