"""User-facing errors: each names the offending field and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "DataError", "DistilError", "ModelError", "TrainingError", "closest"]


class DistilError(Exception):
    """Base class of errors caused by user input; the CLI prints them and exits non-zero."""


class ConfigError(DistilError):
    """A configuration value is unknown, missing or out of range."""


class DataError(DistilError):
    """A data file is missing, empty or malformed."""


class ModelError(DistilError):
    """A model cannot be loaded, built or paired with the other model."""


class TrainingError(DistilError):
    """Training cannot go on (for example a non-finite loss)."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a ' Did you mean ...?' hint for ``name`` among ``choices``, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
