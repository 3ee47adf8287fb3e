"""Run a plan: every step an ordinary run of the loop, finished steps reused, interrupted ones resumed.

The one runner of multi-run work (TED's stages, TinyBERT's two task stages, HomoDistil's head stage, the
teacher-layer probe, the main-job pipeline). Each step runs in its own folder (``RUN_DIR/stages/<name>``
for a method's plan); a step whose folder holds a finished run is reused, one with a checkpoint resumes,
anything else starts afresh. Every static step's config is checked before the first step runs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distil.card import write_card
from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.plans.base import Plan, Step
from distil.run_config import RunConfig
from distil.training.checkpoint import FINISHED_MARKER, check_run_dir, find_checkpoints
from distil.training.checks import check_run
from distil.training.dist import init_distributed
from distil.training.loop import RunResult, train
from distil.training.resume import check_same_run

__all__ = ["run_plan", "run_steps"]


def _finished(folder: Path) -> bool:
    return (folder / FINISHED_MARKER).is_file()


def _act(action: Callable[[RunConfig], None], cfg: RunConfig) -> None:
    """Run a step's action on process 0 while the others wait; its folder is replaced, not resumed."""
    env = init_distributed()
    if env.is_main:
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # an unfinished attempt: redone from the start
        action(cfg)
    env.barrier()


def run_steps(steps: list[Step], *, progress: bool, redo: bool = False) -> dict[str, RunResult]:
    """Run (or reuse, or resume) each step in order; returns each step's result by name.

    With ``redo`` every step trains afresh, replacing what its folder holds (once its run validated).
    """
    results: dict[str, RunResult] = {}
    for step in steps:
        cfg = step.resolve(results) if step.resolve is not None else step.config
        folder = Path(cfg.run_dir)
        if redo:
            results[step.name] = train(cfg, overwrite=True, progress=progress)
        elif _finished(folder):
            check_same_run(folder, cfg, what=f"stage {step.name}")  # a reused stage must be this stage
            print(f"[distil] stage {step.name}: reusing finished {folder}")
            results[step.name] = RunResult.from_run_dir(folder)
        elif step.action is not None:
            print(f"[distil] stage {step.name} -> {folder}")
            _act(step.action, cfg)
            results[step.name] = RunResult.from_run_dir(folder)
        else:
            print(f"[distil] stage {step.name} -> {folder}")
            resume = bool(find_checkpoints(folder))
            results[step.name] = train(cfg, resume=resume, overwrite=not resume, progress=progress)
        if step.check is not None:
            step.check(results[step.name])
    return results


def _check_root(root: Path, *, resume: bool, overwrite: bool) -> None:
    if not resume:
        check_run_dir(root, resume=False, overwrite=overwrite)
    elif _finished(root) or not root.is_dir():
        check_run_dir(root, resume=True, overwrite=False)  # raises: nothing to resume


def _stage_results(results: Mapping[str, RunResult]) -> dict[str, Any]:
    return {
        name: json.loads((r.run_dir / FINISHED_MARKER).read_text())["results"] for name, r in results.items()
    }


def _export_last(plan: Plan, results: Mapping[str, RunResult]) -> RunResult:
    """Write the last step's student to ``root/student`` atomically, its recipe naming the whole plan."""
    last = results[plan.steps[-1].name]
    recipe = json.loads((last.student_dir / "recipe.json").read_text())
    if plan.record == "last":
        recipe["config"]["run_dir"] = str(plan.root)  # the last step's own (resolved) config
    elif plan.config is not None:
        recipe["config"] = plan.config.to_dict()
        recipe["method"] = plan.config.method_name
    recipe["stages"] = _stage_results(results)
    target = plan.root / "student"
    tmp = plan.root / f".student.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(last.student_dir, tmp)
    # The recipe marks a finished run, so it is written into the copy before the copy takes its name.
    atomic_write_text(tmp / "recipe.json", json.dumps(recipe, indent=2, default=str))
    write_card(tmp, title=plan.root.name)  # the whole plan's recipe, not the last stage's alone
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return RunResult.from_run_dir(plan.root)


def run_plan(
    plan: Plan, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> RunResult:
    """Run every step of ``plan`` and, for a method's plan, export the last student as the run's student.

    Args:
        plan: The plan (`distil.plans.plan_for`).
        resume: Continue an interrupted plan: finished steps are reused, the interrupted one resumes.
        overwrite: Replace whatever the plan's root folder holds.
        progress: Show progress bars.

    Raises:
        DistilError: A step's config is invalid (before any step runs), the root folder holds a run that
            neither ``resume`` nor ``overwrite`` says what to do with, or a step fails.
    """
    if resume and overwrite:
        raise ConfigError("Choose one of --resume and --overwrite, not both.")
    if plan.single:
        return train(plan.steps[0].config, resume=resume, overwrite=overwrite, progress=progress)
    for step in plan.steps:
        check_run(step.config)
    _check_root(plan.root, resume=resume, overwrite=overwrite)
    if overwrite and plan.root.exists():
        shutil.rmtree(plan.root)
    results = run_steps(plan.steps, progress=progress)
    return _export_last(plan, results) if plan.export_last else results[plan.steps[-1].name]
