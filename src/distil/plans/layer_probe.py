"""Automatic choice of the teacher layer to distil from (``method.teacher_layer: auto``).

MiniLMv2 (§3.2 and its conclusion) finds that an upper-middle teacher layer can transfer better than
the last one for large teachers, picks it by hand, and leaves an automatic choice to future work. This
plan makes that choice with a short, documented probe; it is a heuristic of ours, not the paper's.

The probe: for each candidate layer ``l`` (default: the upper half of the teacher's layers), train a
copy of the same initial student for ``steps`` steps of the run's own method and data (the shared loop,
same seed, same batches) in ``RUN_DIR/stages/probe-layer-<l>``, and score the layer by how much of its
loss the student removed: ``score(l) = 1 - mean(loss over the last 5 steps) / mean(loss over the first 5
steps)``. The layer with the highest score, the relations the student absorbs fastest, is chosen and the
real run trains with it (``stages/main``, exported to ``RUN_DIR/student``). Scores are printed, written to
``RUN_DIR/teacher_layer_probe.json`` and recorded in the recipe. Raw losses are not compared across
layers because their scales differ from layer to layer.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformers import AutoConfig

from distil.errors import ConfigError, ModelError
from distil.files import atomic_write_text
from distil.models.families import num_layers
from distil.models.loading import resolve_model_path
from distil.plans.base import Plan, Step, stage_dir

if TYPE_CHECKING:
    from distil.run_config import RunConfig
    from distil.training.loop import RunResult

__all__ = ["PROBE_FILE", "LayerProbePlan"]

PROBE_FILE = "teacher_layer_probe.json"
_WINDOW = 5


def _score(log_file: Path) -> float:
    losses = [
        r["loss/total"] for r in map(json.loads, log_file.read_text().splitlines()) if "loss/total" in r
    ]
    first, last = statistics.fmean(losses[:_WINDOW]), statistics.fmean(losses[-_WINDOW:])
    return 1.0 - last / first if first > 0 else 0.0


@dataclass
class LayerProbePlan:
    """Choose ``method.teacher_layer`` with short probe runs, then train with the best-scoring layer.

    Attributes:
        layers: Candidate teacher layers, 1-indexed (default: the upper half of the teacher).
        steps: Training steps per candidate.
    """

    layers: list[int] | None = None
    steps: int = 40

    name: ClassVar[str] = "layer_probe"
    methods: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.steps < 2 * _WINDOW:
            raise ConfigError(
                f"plan.steps must be >= {2 * _WINDOW} for the teacher-layer probe, got {self.steps}."
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("plan.layers must list at least one candidate teacher layer (or be null).")

    def check_run(self, cfg: RunConfig) -> None:
        """The probe chooses ``method.teacher_layer`` of a method that has one, set to ``auto``."""
        if getattr(cfg.method, "teacher_layer", None) != "auto":
            raise ConfigError(
                f"plan.name=layer_probe chooses method.teacher_layer; set it to auto (method "
                f"{cfg.method_name!r} has teacher_layer={getattr(cfg.method, 'teacher_layer', None)!r})."
            )

    def _candidates(self, cfg: RunConfig) -> list[int]:
        assert cfg.models.teacher
        try:
            depth = num_layers(AutoConfig.from_pretrained(resolve_model_path(cfg.models.teacher)))
        except (OSError, ValueError) as err:
            raise ModelError(f"Cannot read the teacher config {cfg.models.teacher!r}: {err}") from err
        layers = list(self.layers) if self.layers else list(range(depth // 2 + 1, depth + 1))
        bad = [layer for layer in layers if not 1 <= layer <= depth]
        if bad:
            raise ConfigError(f"plan.layers {bad} outside the teacher's layers 1..{depth}.")
        return layers

    def plan(self, cfg: RunConfig) -> Plan:
        """One probe run per candidate, then the real run with the best-scoring layer."""
        root = Path(cfg.run_dir)
        steps: list[Step] = []
        for layer in self._candidates(cfg):
            probe = copy.deepcopy(cfg)
            probe.run_dir, probe.plan = str(stage_dir(root, f"probe-layer-{layer}")), None
            probe.method = dataclasses.replace(cfg.method, teacher_layer=layer)
            probe.train = dataclasses.replace(
                cfg.train, max_steps=self.steps, log_every=1, report_to=[], eval_every=0,
                checkpoint_every=0, warmup_ratio=0.0,
            )  # fmt: skip
            probe.eval = dataclasses.replace(cfg.eval, select="last")
            steps.append(Step(f"probe-layer-{layer}", probe))
        candidates = [int(s.config.method.teacher_layer) for s in steps]
        main = copy.deepcopy(cfg)
        main.run_dir, main.plan = str(stage_dir(root, "main")), None
        main.method = dataclasses.replace(cfg.method, teacher_layer=candidates[-1])  # stand-in until resolved

        def choose(results: Mapping[str, RunResult]) -> RunConfig:
            scores = {
                layer: _score(results[f"probe-layer-{layer}"].run_dir / "log.jsonl") for layer in candidates
            }
            best = max(scores, key=lambda layer: scores[layer])
            rule = "1 - last5/first5 loss"
            report: dict[str, Any] = {"chosen_layer": best, "scores": scores, "probe_steps": self.steps}
            report["rule"] = rule
            shown = ", ".join(f"{k}: {v:.4f}" for k, v in scores.items())
            print(f"[distil] teacher-layer probe: {shown} -> {best}")
            atomic_write_text(root / PROBE_FILE, json.dumps(report, indent=2))
            resolved = copy.deepcopy(main)
            resolved.method = dataclasses.replace(cfg.method, teacher_layer=best)
            return resolved

        steps.append(Step("main", main, resolve=choose))
        return Plan(root, steps, cfg, record="last")

    def step_names(self, cfg: RunConfig) -> list[str]:
        """One probe per candidate (given, or the teacher's upper half), then ``main``."""
        probes = [f"probe-layer-{layer}" for layer in self.layers] if self.layers else ["probe-layer-..."]
        return [*probes, "main"]
