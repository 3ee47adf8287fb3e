"""Extractive QA (SQuAD v1.1 and v2.0).

The task (task.py), reading the JSON files (reader.py), windowed features (features.py), span decoding
(decode.py) and EM/F1 (metrics.py).
"""

from __future__ import annotations

from distil.tasks.squad.task import SquadData, SquadTask

__all__ = ["SquadData", "SquadTask"]
