"""The main job: fine-tune a teacher, distil it into a shallower student with KD, compare the two.

A plan of two steps run by `distil.plans.runner.run_steps`, each an ordinary run of the shared loop in its
own folder under ``run_dir``:
1. ``teacher/``: fine-tune the teacher checkpoint on the task (method ``finetune``).
2. ``kd/``: KD into a student initialised from teacher layers chosen by the M(k) map.
Then a side-by-side table: dev metric, parameters, latency at batch 1 and 32, speedup, student path.

A finished step is reused when the pipeline is run again; an interrupted one resumes from its latest
checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distil.errors import ConfigError
from distil.evaluation.speed import measure_latency
from distil.files import atomic_write_text
from distil.methods.finetune import FinetuneConfig
from distil.methods.kd import KDConfig
from distil.models.loading import load_model
from distil.models.students import StudentConfig, count_parameters
from distil.plans.base import Step
from distil.plans.runner import run_steps
from distil.run_config import ModelsConfig, RunConfig, TrainConfig
from distil.schema import to_dict
from distil.tasks import GlueData
from distil.training.checkpoint import FINISHED_MARKER

__all__ = ["LatencyConfig", "PipelineConfig", "run_pipeline"]


@dataclass
class LatencyConfig:
    """Latency measurement.

    Attributes:
        seq_length: Tokens per sequence (SST-2 sentences are at most 66 tokens long).
        batch_sizes: Batch sizes to time.
        repeats: Timed passes per model and batch size.
        threads: torch intra-op threads while timing (``None`` keeps torch's default).
    """

    seq_length: int = 64
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    repeats: int = 20
    threads: int | None = None


@dataclass
class PipelineConfig:
    """The main job's settings (defaults: all-MiniLM-L6-v2 on a 20k-example SST-2 subset, ~7 min on 2 cores).

    Attributes:
        run_dir: Folder of the whole pipeline.
        teacher: Checkpoint to fine-tune as the teacher.
        student_layers: Depth of the student; its layers come from the teacher by the paper's M(k) map.
        data: GLUE task data (shared by both stages).
        teacher_train: Optimisation of the teacher fine-tuning.
        student_train: Optimisation of the KD stage.
        kd: KD settings.
        latency: Latency measurement.
    """

    run_dir: str = "runs/sst2-pipeline"
    teacher: str = "embedded"
    student_layers: int = 3
    data: GlueData = field(default_factory=lambda: GlueData(task="sst2", max_length=64, train_subset=20000))
    teacher_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, batch_size=32, epochs=1))
    student_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=1e-4, batch_size=32, epochs=1, cache_teacher=True)
    )
    kd: KDConfig = field(default_factory=KDConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


def stage_configs(cfg: PipelineConfig) -> tuple[RunConfig, RunConfig]:
    """The two runs the pipeline makes: teacher fine-tuning and KD."""
    root = Path(cfg.run_dir)
    teacher_run = RunConfig(
        run_dir=str(root / "teacher"),
        models=ModelsConfig(teacher=None, student=StudentConfig(init="pretrained", path=cfg.teacher)),
        data=cfg.data,
        train=cfg.teacher_train,
        method=FinetuneConfig(),
    )
    kd_run = RunConfig(
        run_dir=str(root / "kd"),
        models=ModelsConfig(
            teacher=str(root / "teacher" / "student"),
            student=StudentConfig(init="layers", num_layers=cfg.student_layers, layer_map="paper"),
        ),
        data=cfg.data,
        train=cfg.student_train,
        method=cfg.kd,
    )
    return teacher_run, kd_run


def run_pipeline(cfg: PipelineConfig, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every stage and return (and print) the comparison table."""
    root = Path(cfg.run_dir)
    summary_path = root / "summary.json"
    if summary_path.exists() and not overwrite:
        raise ConfigError(
            f"{root} holds a finished pipeline run. Pass --overwrite to redo it, or pick another run_dir."
        )
    teacher_run, kd_run = stage_configs(cfg)
    run_steps([Step("teacher", teacher_run), Step("kd", kd_run)], progress=progress, redo=overwrite)
    teacher_recipe = json.loads((root / "teacher" / FINISHED_MARKER).read_text())
    kd_recipe = json.loads((root / "kd" / FINISHED_MARKER).read_text())
    rows = _compare(cfg, root, teacher_recipe, kd_recipe)
    summary = {"config": to_dict(cfg), "rows": rows}
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    table = format_table(rows, teacher_recipe["results"]["selection_metric"])
    atomic_write_text(root / "summary.md", table + "\n")
    print(table)
    return summary


def _compare(
    cfg: PipelineConfig, root: Path, teacher_recipe: dict[str, Any], kd_recipe: dict[str, Any]
) -> list[dict[str, Any]]:
    num_labels = 1 if cfg.data.task == "stsb" else None
    paths = {"teacher": root / "teacher" / "student", "student (KD)": root / "kd" / "student"}
    models = {name: load_model(str(p), head="seq", num_labels=num_labels) for name, p in paths.items()}
    threads = torch.get_num_threads()
    if cfg.latency.threads:
        torch.set_num_threads(cfg.latency.threads)
    latency = {
        bs: measure_latency(
            models, batch_size=bs, seq_length=cfg.latency.seq_length, repeats=cfg.latency.repeats
        )
        for bs in cfg.latency.batch_sizes
    }
    torch.set_num_threads(threads)
    recipes = {"teacher": teacher_recipe, "student (KD)": kd_recipe}
    rows = []
    for name, model in models.items():
        row: dict[str, Any] = {"model": name, "path": str(paths[name]), "parameters": count_parameters(model)}
        row.update(recipes[name]["results"]["dev"])
        for bs in cfg.latency.batch_sizes:
            row[f"latency_ms_b{bs}"] = latency[bs][name].median_ms
            row[f"speedup_b{bs}"] = latency[bs]["teacher"].median_ms / latency[bs][name].median_ms
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    """A markdown table of the comparison rows."""
    batch_cols = sorted(
        {k for r in rows for k in r if k.startswith("latency_ms_b")}, key=lambda k: int(k[12:])
    )
    head = [
        "model",
        metric,
        "parameters",
        *[f"latency b={c[12:]} (ms)" for c in batch_cols],
        *[f"speedup b={c[12:]}" for c in batch_cols],
        "saved at",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r.get(metric, float('nan')):.4f}", f"{r['parameters'] / 1e6:.2f}M"]
        cells += [f"{r[c]:.1f}" for c in batch_cols]
        cells += [f"{r['speedup_b' + c[12:]]:.2f}x" for c in batch_cols]
        cells.append(r["path"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
