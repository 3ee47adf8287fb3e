"""The task registry: one kind per module, each with its data section, loading, collate and evaluation."""

from __future__ import annotations

from typing import Any

from distil.errors import ConfigError, closest
from distil.metrics import canonical_task_name
from distil.tasks.base import DataCommon, Task, row_lengths
from distil.tasks.chat import ChatData, ChatTask
from distil.tasks.corpus import CorpusData, CorpusTask
from distil.tasks.custom import CustomData, CustomTask
from distil.tasks.glue import GlueData, GlueTask
from distil.tasks.glue.table import GLUE_TASKS
from distil.tasks.lm import LMData, LMTask
from distil.tasks.squad import SquadData, SquadTask

__all__ = [
    "TASKS",
    "ChatData",
    "CorpusData",
    "CustomData",
    "DataCommon",
    "GlueData",
    "LMData",
    "SquadData",
    "Task",
    "load_task",
    "row_lengths",
    "task_class",
]

TASKS: dict[str, type[Task]] = {
    "glue": GlueTask,
    "custom": CustomTask,
    "squad": SquadTask,
    "corpus": CorpusTask,
    "lm": LMTask,
    "chat": ChatTask,
}


def task_class(name: str) -> type[Task]:
    """The task kind that ``data.task=name`` belongs to (GLUE names and their aliases included).

    Raises:
        ConfigError: No kind has a task of that name; the message lists them with a close match.
    """
    for cls in TASKS.values():
        if name in cls.names:
            return cls
    try:
        if canonical_task_name(name) in GLUE_TASKS:
            return GlueTask
    except ConfigError:
        pass
    names = [n for cls in TASKS.values() for n in cls.names]
    raise ConfigError(
        f"Unknown task {name!r} (data.task).{closest(name.lower(), names)} Valid tasks: {', '.join(names)}."
    )


def load_task(data: Any, seed: int) -> Task:
    """Read and validate the configured task's raw data (no tokenisation yet)."""
    return task_class(data.task)(data, seed)
