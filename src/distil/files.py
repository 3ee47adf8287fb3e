"""Atomic file writes: a reader (or a resumed run) sees the old content or the new one, never a mix.

Every file distil writes into a run directory or beside a model goes through here: the content is written
to a temporary name in the same folder and renamed into place, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_text"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file so that readers see either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
