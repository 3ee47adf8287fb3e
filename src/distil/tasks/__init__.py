"""Task data for the loop: labelled tasks and text corpora behind one ``TaskData`` protocol."""

from __future__ import annotations

from distil.config import DataConfig
from distil.tasks.base import TaskData
from distil.tasks.classification import ClassificationTask
from distil.tasks.corpus import CorpusTask
from distil.tasks.lm import LMTask
from distil.tasks.qa import QATask

__all__ = ["ClassificationTask", "CorpusTask", "LMTask", "QATask", "TaskData", "load_task"]


def load_task(data: DataConfig, seed: int) -> TaskData:
    """Read and validate the configured task's raw data (no tokenisation yet)."""
    if data.task == "corpus":
        return CorpusTask(data, seed)
    if data.task in ("squad", "squad_v2"):
        return QATask(data, seed)
    if data.task == "lm":
        return LMTask(data, seed)
    return ClassificationTask(data, seed)
