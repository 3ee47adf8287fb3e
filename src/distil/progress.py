"""Progress lines for the long phases outside the training steps: caching teacher outputs, evaluation.

The training loop has its bar (or its lines off a terminal); these phases would otherwise be silent for
minutes (a teacher-logit cache of 9,000 rows on a loaded CPU). A `Phase` prints one line at most every
``every`` seconds, and a closing line when it took longer than ``quiet_below`` seconds, so short phases
stay silent. Plain lines, never carriage returns: they read the same in a terminal, a log file or CI.
Only process 0 prints (``enabled``).
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Phase", "clock"]

EVERY = 30.0  # seconds between lines
QUIET_BELOW = 5.0  # a phase shorter than this prints nothing


def clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Phase:
    """Counts the units of one phase and says how far it is.

    Args:
        what: The phase, as the line names it (``caching teacher logits``).
        total: Units it will process.
        unit: Their name (``batches``).
        enabled: Print at all (default: only in process 0, by the launcher's ``RANK``).
        every: Seconds between lines (default `EVERY`).
        quiet_below: A phase that ends sooner prints nothing (default `QUIET_BELOW`).
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "batches",
        *,
        enabled: bool | None = None,
        every: float | None = None,
        quiet_below: float | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        # Default: process 0 of a launcher (torchrun sets RANK), or the only process.
        self.enabled = int(os.environ.get("RANK", "0") or 0) == 0 if enabled is None else enabled
        self.every = EVERY if every is None else every
        self.quiet_below = QUIET_BELOW if quiet_below is None else quiet_below
        self.done = 0
        self.started = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        """``n`` more units done; a line when ``every`` seconds passed since the last."""
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every and self.done < self.total:
            self.last = now
            elapsed = now - self.started
            left = elapsed / max(self.done, 1) * (self.total - self.done)
            share = 100 * self.done / max(self.total, 1)
            counts = f"{self.done}/{self.total} {self.unit} ({share:.0f}%)"
            self._say(f"{counts}, {clock(elapsed)} elapsed, ~{clock(left)} left")

    def close(self) -> None:
        """The closing line, when the phase was long enough to have been worth watching."""
        elapsed = time.perf_counter() - self.started
        if self.enabled and elapsed >= self.quiet_below:
            self._say(f"done, {self.done} {self.unit} in {clock(elapsed)}")

    def _say(self, text: str) -> None:
        print(f"[distil] {self.what}: {text}", file=sys.stdout, flush=True)
