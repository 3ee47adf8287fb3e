"""Instruction and chat data.

The task (task.py), reading conversations (reader.py) and rendering them with a chat template into
tokens with an assistant mask (render.py).
"""

from __future__ import annotations

from distil.tasks.chat.task import ChatData, ChatTask

__all__ = ["ChatData", "ChatTask"]
