"""Multi-stage methods (TED: fine-tune, learn filters, distil; TinyBERT: general then task distillation).

A method with stages defines ``stage_plan(cfg: RunConfig) -> list[tuple[str, RunConfig]]``: one ordinary
run of the shared loop per stage, each with its own config (usually the same method with a ``stage``
field set, whose own plan is empty). Stages run in ``RUN_DIR/stages/<name>``; a finished stage is reused,
an interrupted one resumes, and the last stage's student is exported as ``RUN_DIR/student``. Each
stage's outputs (``stages/<name>/student``, including ``method.safetensors`` for method-owned modules)
can be reused by pointing a later run at them, so stages can also be run one by one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.config import RunConfig
from distil.training.checkpoint import FINISHED_MARKER, atomic_write_text, check_run_dir, latest_checkpoint

if TYPE_CHECKING:
    from distil.training.loop import RunResult

__all__ = ["run_stages", "stage_dir"]


def stage_dir(root: str | Path, name: str) -> Path:
    """Where stage ``name`` of the run in ``root`` lives."""
    return Path(root) / "stages" / name


def run_stages(
    cfg: RunConfig, plan: list[tuple[str, RunConfig]], *, resume: bool, overwrite: bool, progress: bool
) -> RunResult:
    """Run every stage of ``plan`` in order and export the last stage's student as the run's student."""
    from distil.training.loop import RunResult, train

    root = Path(cfg.run_dir)
    if not resume:
        check_run_dir(root, resume=False, overwrite=overwrite)
        if overwrite and root.exists():
            shutil.rmtree(root)
    elif (root / FINISHED_MARKER).exists():
        check_run_dir(root, resume=True, overwrite=False)  # raises: nothing to resume
    results: dict[str, Any] = {}
    last: RunResult | None = None
    for name, stage_cfg in plan:
        stage_cfg.run_dir = str(stage_dir(root, name))
        folder = Path(stage_cfg.run_dir)
        if (folder / FINISHED_MARKER).exists():
            print(f"[distil] stage {name}: reusing finished {folder}")
            recipe = json.loads((folder / FINISHED_MARKER).read_text())
            results[name] = recipe["results"]
            last = RunResult(folder / "student", recipe["results"].get("dev") or {}, None, 0, 0.0)
            continue
        print(f"[distil] stage {name} -> {folder}")
        stage_resume = latest_checkpoint(folder) is not None
        last = train(stage_cfg, resume=stage_resume, overwrite=not stage_resume, progress=progress)
        results[name] = json.loads((folder / FINISHED_MARKER).read_text())["results"]
    assert last is not None, "a stage plan must have at least one stage"
    target = root / "student"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(last.student_dir, target)
    recipe = json.loads((target / "recipe.json").read_text())
    recipe.update({"method": cfg.method_name, "config": cfg.to_dict(), "stages": results})
    atomic_write_text(target / "recipe.json", json.dumps(recipe, indent=2, default=str))
    return RunResult(target, last.metrics, last.best_step, last.steps, last.train_seconds)
