"""Automatic choice of the teacher layer to distil from (``method.teacher_layer: auto``).

MiniLMv2 (§3.2 and its conclusion) finds that an upper-middle teacher layer can transfer better than
the last one for large teachers, picks it by hand, and leaves an automatic choice to future work. This
module makes that choice with a short, documented probe; it is a heuristic of ours, not the paper's.

The probe: for each candidate layer ``l`` (default: the upper half of the teacher's layers), train a
copy of the same initial student for ``probe_steps`` steps of the run's own method and data (the shared
loop, same seed, same batches), and score the layer by how much of its loss the student removed:
``score(l) = 1 - mean(loss over the last 5 steps) / mean(loss over the first 5 steps)``. The layer with
the highest score, the relations the student absorbs fastest, is chosen. Scores are printed, written to
``RUN_DIR/teacher_layer_probe.json`` and recorded in the recipe. Raw losses are not compared across
layers because their scales differ from layer to layer.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from distil.config import RunConfig
from distil.errors import ConfigError
from distil.models.architectures import num_layers
from distil.models.loading import load_model

__all__ = ["PROBE_FILE", "needs_layer_probe", "probe_teacher_layer"]

PROBE_FILE = "teacher_layer_probe.json"
_WINDOW = 5


def needs_layer_probe(cfg: RunConfig) -> bool:
    """Whether the method asks for ``teacher_layer: auto``."""
    return getattr(cfg.method, "teacher_layer", None) == "auto"


def _candidates(cfg: RunConfig) -> list[int]:
    explicit = getattr(cfg.method, "probe_layers", None)
    assert cfg.models.teacher
    depth = num_layers(load_model(cfg.models.teacher, head="base").config)
    layers = list(explicit) if explicit else list(range(depth // 2 + 1, depth + 1))
    bad = [layer for layer in layers if not 1 <= layer <= depth]
    if bad:
        raise ConfigError(f"method.probe_layers {bad} outside the teacher's layers 1..{depth}.")
    return layers


def _score(log_file: Path) -> float:
    losses = [
        r["loss/total"] for r in map(json.loads, log_file.read_text().splitlines()) if "loss/total" in r
    ]
    if len(losses) < 2 * _WINDOW:
        raise ConfigError(f"method.probe_steps must be >= {2 * _WINDOW} for the teacher-layer probe.")
    first, last = statistics.fmean(losses[:_WINDOW]), statistics.fmean(losses[-_WINDOW:])
    return 1.0 - last / first if first > 0 else 0.0


def probe_teacher_layer(cfg: RunConfig, *, resume: bool = False) -> tuple[RunConfig, dict[str, Any]]:
    """Run the probe and return ``cfg`` with the chosen layer plus a JSON-able report.

    On ``resume`` the choice saved in the run directory is reused, so the resumed run matches.
    """
    from distil.training.loop import train  # the probe runs the shared loop itself

    saved = Path(cfg.run_dir) / PROBE_FILE
    if resume and saved.is_file():
        report = json.loads(saved.read_text())
        resolved = copy.deepcopy(cfg)
        resolved.method = replace(cfg.method, teacher_layer=int(report["chosen_layer"]))
        return resolved, report

    steps = int(getattr(cfg.method, "probe_steps", 40))
    scores: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="distil-layer-probe-") as tmp:
        for layer in _candidates(cfg):
            probe = copy.deepcopy(cfg)
            probe.run_dir = str(Path(tmp) / f"layer-{layer}")
            probe.method = replace(cfg.method, teacher_layer=layer)
            probe.train = replace(cfg.train, max_steps=steps, log_every=1, tensorboard=False, eval_every=0,
                                  checkpoint_every=0, warmup_ratio=0.0)  # fmt: skip
            train(probe, progress=False)
            scores[layer] = _score(Path(probe.run_dir) / "log.jsonl")
    best = max(scores, key=lambda layer: scores[layer])
    report = {"chosen_layer": best, "scores": scores, "probe_steps": steps, "rule": "1 - last5/first5 loss"}
    print(f"[distil] teacher-layer probe: {', '.join(f'{k}: {v:.4f}' for k, v in scores.items())} -> {best}")
    resolved = copy.deepcopy(cfg)
    resolved.method = replace(cfg.method, teacher_layer=best)
    return resolved, report
