"""Metric logging: ``log.jsonl`` in the run directory and the experiment trackers of ``train.report_to``.

The trackers are Accelerate's (`accelerate.tracking`): TensorBoard event files in ``RUN_DIR/tb``, a
Weights & Biases run, an MLflow run. Only the main process logs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricLogger", "progress_line"]


def _tracker(name: str, run_dir: Path) -> Any:
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    if name == "tensorboard":
        return TensorBoardTracker("tb", run_dir)
    if name == "wandb":
        return WandBTracker(run_dir.name)
    return MLflowTracker(experiment_name=run_dir.name, run_name=run_dir.name)


class MetricLogger:
    """Writes one record per logging window (and per evaluation) to ``log.jsonl`` and to the trackers.

    Args:
        run_dir: The run's folder.
        trackers: Tracker names (``tensorboard``, ``wandb``, ``mlflow``).
        config: The run's config, stored by each tracker as its hyper-parameters.
        enabled: Only the main process logs.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        trackers: list[str],
        config: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self._trackers: list[Any] = []
        if not enabled:
            return
        for name in trackers:
            tracker = _tracker(name, run_dir)
            tracker.start()
            if config:
                tracker.store_init_configuration(_flat_config(config))
            self._trackers.append(tracker)

    def write(self, step: int, record: dict[str, float]) -> None:
        """Append a record (loss terms, evaluation metrics) for ``step``."""
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        numbers = {k: v for k, v in record.items() if math.isfinite(v)}
        for tracker in self._trackers:
            tracker.log(numbers, step=step)

    def close(self) -> None:
        """Finish every tracker's run."""
        for tracker in self._trackers:
            tracker.finish()
        self._trackers = []


def _flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Hyper-parameters as trackers take them: dotted keys, plain values (lists as text)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flat_config(value, f"{prefix}{key}.")
        return out
    value = node if isinstance(node, bool | int | float | str) or node is None else str(node)
    return {prefix[:-1]: value}


def progress_line(step: int, total: int, record: dict[str, float], elapsed: float, steps_done: int) -> str:
    """A one-line progress report: step, loss terms, samples/s and the time left at the current pace."""
    terms = {k.removeprefix("loss/"): v for k, v in record.items() if k.startswith("loss/")}
    loss = terms.pop("total", float("nan"))
    parts = ", ".join(f"{k} {v:.4g}" for k, v in sorted(terms.items()))
    left = (total - step) * elapsed / max(steps_done, 1)
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
    speed = record.get("samples_per_s", float("nan"))
    return (
        f"[distil] step {step}/{total} ({100 * step / max(total, 1):.0f}%): loss {loss:.4f}"
        + (f" ({parts})" if parts else "")
        + f", {speed:.1f} samples/s, {eta} left"
    )
