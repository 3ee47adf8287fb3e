"""One-shot pruning then distillation (Minitron-style): prune the teacher's copy once, then distil into it.

The ``prune`` stage is not a training run: on one process it builds the run's data, scores every KV
group, SwiGLU channel, hidden channel and layer of a copy of the teacher on calibration rows
(`distil.pruning.oneshot`), cuts the copy to the target widths and depth, and saves it as a standard
checkpoint (``stages/prune/student``, with ``pruning.json``: importance, kept layers, seconds). The
``distil`` stage is the run's own method (KD, GKD, any decoder objective) with that checkpoint as its
student, under whatever engine the run names (FSDP2 included: its processes wait while process 0 prunes).
Targets are HomoDistil's (`distil.pruning.units.resolve_targets`), so the two can be compared.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.models.families import num_layers
from distil.models.students import StudentConfig, count_parameters
from distil.plans.base import Plan, Step, stage_dir
from distil.pruning.oneshot import LayerMetric, importance, prune_once
from distil.pruning.units import prunable_units, resolve_targets

if TYPE_CHECKING:
    from distil.run_config import RunConfig

__all__ = ["PRUNE_REPORT", "OneShotPrunePlan"]

PRUNE_REPORT = "pruning.json"


@dataclass
class OneShotPrunePlan:
    """Prune a copy of the teacher once from calibration activations, then distil into it.

    Target fields are HomoDistil's (give widths, a ratio or a parameter budget; none: half of every width).

    Attributes:
        target_hidden_size: Hidden width of the pruned student.
        target_intermediate_size: SwiGLU width (default: scaled like the hidden width).
        target_num_key_value_heads: KV groups per layer, each with its query heads (default: all).
        target_width_ratio: Keep this share of every width instead.
        target_params: Or a parameter budget (widths scaled alike; depth as ``target_num_layers`` says).
        target_num_layers: Layers kept (default: all), the most important by ``layer_metric``.
        layer_metric: ``cosine`` (``1 - cos(input, output)`` of each block) or ``perplexity`` (the
            calibration loss's rise when the block is skipped; one extra pass per layer).
        calibration_rows: Training rows scored (a seeded sample of the run's training set).
        calibration_batch_size: Rows per calibration forward pass (default: ``train.batch_size``).
    """

    target_hidden_size: int | None = None
    target_intermediate_size: int | None = None
    target_num_key_value_heads: int | None = None
    target_width_ratio: float | None = None
    target_params: int | None = None
    target_num_layers: int | None = None
    layer_metric: LayerMetric = "cosine"
    calibration_rows: int = 256
    calibration_batch_size: int | None = None

    name: ClassVar[str] = "oneshot_prune"
    methods: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        widths = any(
            v is not None
            for v in (self.target_hidden_size, self.target_intermediate_size, self.target_num_key_value_heads)
        )
        if sum([widths, self.target_width_ratio is not None, self.target_params is not None]) > 1:
            raise ConfigError(
                "Give one pruning target: plan.target_hidden_size (and/or target_intermediate_size, "
                "target_num_key_value_heads), plan.target_width_ratio or plan.target_params."
            )
        if not widths and self.target_params is None and self.target_width_ratio is None:
            self.target_width_ratio = 0.5 if self.target_num_layers is None else 1.0
        if self.target_width_ratio is not None and not 0 < self.target_width_ratio <= 1:
            raise ConfigError(f"plan.target_width_ratio must be in (0, 1], got {self.target_width_ratio}.")
        if self.target_num_layers is not None and self.target_num_layers < 1:
            raise ConfigError(f"plan.target_num_layers must be >= 1, got {self.target_num_layers}.")
        if self.calibration_rows < 1 or (self.calibration_batch_size or 1) < 1:
            raise ConfigError("plan.calibration_rows and plan.calibration_batch_size must be >= 1.")

    def check_run(self, cfg: RunConfig) -> None:
        """The distil stage is the run's method, which must train a student from a teacher."""
        if cfg.method_name == "homodistil":
            raise ConfigError(
                "plan.name=oneshot_prune prunes once, then distils with the run's method; HomoDistil prunes "
                "while distilling by itself (use plan.name=homodistil, or method.name=kd here)."
            )
        if not cfg.models.teacher:
            raise ConfigError("plan.name=oneshot_prune prunes a copy of models.teacher; set it.")

    def plan(self, cfg: RunConfig) -> Plan:
        """``prune`` (one process scores and cuts a copy of the teacher), then ``distil`` into it."""
        root = Path(cfg.run_dir)
        prune = copy.deepcopy(cfg)
        prune.run_dir, prune.plan = str(stage_dir(root, "prune")), None
        prune.models.student = StudentConfig(init="copy")
        distil = copy.deepcopy(cfg)
        distil.run_dir, distil.plan = str(stage_dir(root, "distil")), None
        distil.models.student = StudentConfig.pretrained(str(stage_dir(root, "prune") / "student"))
        return Plan(root, [Step("prune", prune, action=self._prune), Step("distil", distil)], cfg)

    def step_names(self, cfg: RunConfig) -> list[str]:
        """``prune`` and ``distil``."""
        return ["prune", "distil"]

    def _prune(self, cfg: RunConfig) -> None:
        """Score, cut and save the student of the prune stage (``cfg.run_dir/student``, finished)."""
        from distil.training.assembly import write_config
        from distil.training.export import export_student
        from distil.training.setup import build_run

        started = time.perf_counter()
        parts = build_run(cfg)
        model = parts.student.eval()
        units = prunable_units(model)
        if not units.kv_groups:
            raise ConfigError(
                f"plan.name=oneshot_prune scores KV groups and SwiGLU channels of decoders; "
                f"{model.config.model_type!r} is pruned while distilled instead (method.name=homodistil)."
            )
        widths = resolve_targets(
            model, units, hidden=self.target_hidden_size, ffn=self.target_intermediate_size,
            ratio=self.target_width_ratio, params=self.target_params,
            kv_heads=self.target_num_key_value_heads,
        )  # fmt: skip
        depth = num_layers(model.config)
        if self.target_num_layers is not None and self.target_num_layers > depth:
            raise ConfigError(f"plan.target_num_layers={self.target_num_layers} must be in 1..{depth}.")
        rows = parts.task.train_set
        generator = torch.Generator().manual_seed(cfg.train.seed)
        picked = torch.randperm(len(rows), generator=generator)[: self.calibration_rows].tolist()
        size = self.calibration_batch_size or cfg.train.batch_size
        batches = [
            parts.task.collate([rows[i] for i in picked[s : s + size]]) for s in range(0, len(picked), size)
        ]
        scored = time.perf_counter()
        scores = importance(model, units, batches, self.layer_metric)
        teacher_parameters = count_parameters(model)
        # The run's copy of the teacher is not needed whole afterwards: it is cut in place.
        pruned, layers = prune_once(model, units, scores, widths, self.target_num_layers)
        seconds = {"importance": time.perf_counter() - scored, "total": time.perf_counter() - started}
        report: dict[str, object] = {
            "widths": widths,
            "layers": layers,
            "layer_metric": self.layer_metric,
            "layer_importance": scores.layers.tolist(),
            "calibration_rows": len(picked),
            "calibration_tokens": scores.tokens,
            "parameters": {"teacher": teacher_parameters, "student": count_parameters(pruned)},
            "seconds": seconds,
        }
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run_dir)
        atomic_write_text(run_dir / PRUNE_REPORT, json.dumps(report, indent=2))
        recipe = {
            "method": "oneshot_prune",
            "config": cfg.to_dict(),
            "results": {"steps": 0, "pruning": report},
        }
        export_student(pruned, parts.tokenizer, run_dir, recipe)
        print(
            f"[distil] one-shot pruning: widths {widths}, layers {layers}; {teacher_parameters:,} -> "
            f"{count_parameters(pruned):,} parameters; scored {scores.tokens:,} tokens in "
            f"{seconds['importance']:.1f} s"
        )
