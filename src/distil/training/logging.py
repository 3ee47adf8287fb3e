"""Metric logging: a JSONL file, optional TensorBoard, and running means of every loss term."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["MetricLogger"]


class MetricLogger:
    """Collects per-step values, averages them over a logging window, and writes one record per window.

    Only the main process should create one with ``enabled=True``.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._samples = 0
        self._window_start = time.perf_counter()
        self._writer: Any = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tb"))

    def accumulate(self, values: dict[str, float], samples: int) -> None:
        """Add one optimiser step's loss terms and the number of examples it consumed."""
        for key, value in values.items():
            self._sums[key] += value
        self._count += 1
        self._samples += samples

    def flush(self, step: int, extra: dict[str, float]) -> dict[str, float]:
        """Write the window's means plus ``extra`` (e.g. lr) and start a new window; returns the record."""
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        record = {f"loss/{k}": v / max(self._count, 1) for k, v in self._sums.items()}
        record.update(extra)
        record["samples_per_s"] = self._samples / elapsed
        self.write(step, record)
        self._sums.clear()
        self._count = self._samples = 0
        self._window_start = time.perf_counter()
        return record

    def write(self, step: int, record: dict[str, float]) -> None:
        """Append a record (e.g. evaluation metrics) for ``step``."""
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
