"""GLUE: the task (task.py), its table of tasks (table.py) and its readers (reader.py)."""

from __future__ import annotations

from distil.tasks.glue.task import GlueData, GlueTask

__all__ = ["GlueData", "GlueTask"]
