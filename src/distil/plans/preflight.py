"""Checks of a plan's steps against their models' files before anything trains (``distil validate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distil.run_config import RunConfig

__all__ = ["models_checked", "written_later"]


def written_later(paths: list[str | None], root: str | Path) -> bool:
    """Whether a model path lies under ``root`` and does not exist yet (a run there writes it)."""
    top = Path(root).resolve()
    return any(p and Path(p).resolve().is_relative_to(top) and not Path(p).exists() for p in paths)


def models_checked(
    cfg: RunConfig, time_steps: int = 0, root: Path | None = None
) -> tuple[list[str], list[str]]:
    """Build each step of the plan whose models exist on the meta device; the names of those steps.

    This runs every check training runs before its first step that needs only the checkpoints'
    ``config.json`` and tokenizer files (family, depth against the layer map, widths, heads, label
    count, vocabulary, maximum length). A step whose models an earlier step will write, or whose config
    comes from earlier results, is checked when it runs. With ``time_steps``, each such step is also
    built for real and that many of its steps timed (`distil.training.estimate`); the second list holds
    one line per step of the plan. ``root``: the folder whose runs write models later (default: the
    plan's own; `distil compare` passes its whole grid's).
    """
    from distil.plans import plan_for
    from distil.training.estimate import estimate_stage, format_time
    from distil.training.setup import build_run

    plan = plan_for(cfg)
    checked, times, total = [], [], 0.0
    for step in plan.steps:
        paths = [step.config.models.teacher, step.config.models.student.path]
        if step.resolve is not None or written_later(paths, root or plan.root):
            times.append(f"  {step.name}: not timed (its models are written by an earlier step)")
            continue
        checked.append(step.name)
        if not time_steps:
            build_run(step.config, meta=True, prepare=False)
        else:  # builds the step for real, which runs every check the meta build runs
            est = estimate_stage(step.config, step.name, steps=time_steps)
            total += est.total_seconds
            times.append(
                f"  {step.name}: ~{format_time(est.total_seconds)} ({est.steps} steps x "
                f"{est.seconds_per_step:.3g} s, median of {est.timed_steps}; {est.evaluations} evaluation(s) "
                f"~{format_time(est.eval_seconds)}; loading and tokenising {format_time(est.setup_seconds)})"
            )
    if time_steps:
        times.append(f"  timed stages together: ~{format_time(total)} on this machine, as it is loaded now")
    return checked, times
