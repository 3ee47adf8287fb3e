"""Your own labelled files: the task (task.py) and its readers (reader.py)."""

from __future__ import annotations

from distil.tasks.custom.task import CustomData, CustomTask

__all__ = ["CustomData", "CustomTask"]
