"""Checks that the sections of a run config fit together, run before any work (and by ``distil validate``).

Each section checks its own ranges when it is built; this module checks what needs two sections: the
method against the task (through its ``check_run`` and a `distil.types.RunView`), the teacher cache against
the task, and the selection metric against the task's metrics.
"""

from __future__ import annotations

from distil.errors import ConfigError, closest
from distil.run_config import RunConfig
from distil.tasks import task_class
from distil.training.engines import engine_class, traits_of
from distil.types import RunView

__all__ = ["check_run", "run_view"]


def run_view(cfg: RunConfig) -> RunView:
    """What a method's config may know about the rest of ``cfg``."""
    task = task_class(cfg.data.task)
    return RunView(
        task=cfg.data.task,
        task_kind=task.kind,
        head=task.head,
        labelled=task.labelled,
        regression=cfg.data.regression(),
        max_steps=cfg.train.max_steps,
        eval_select=cfg.eval.select,
        cache_teacher=cfg.train.cache_teacher,
        student_init=cfg.models.student.init,
        plan=cfg.plan_name,
        engine=traits_of(cfg.train.parallel),
    )


def check_run(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` for a run config that training would reject, before any work.

    Raises:
        ConfigError: The method cannot train this task, the teacher cache does not apply, or
            ``eval.metric`` is not a metric of the task.
    """
    view = run_view(cfg)
    task = task_class(cfg.data.task)
    if cfg.train.cache_teacher and not task.cacheable_teacher:
        raise ConfigError(
            "train.cache_teacher keeps the teacher's class logits of each example; "
            f"data.task={cfg.data.task} has per-token outputs (too large to keep). "
            "Set train.cache_teacher=false."
        )
    if cfg.train.cache_teacher_topk is not None and task.head != "lm":
        raise ConfigError(
            "train.cache_teacher_topk caches the teacher's token distributions for token-level KD on a "
            f"causal LM (data.task=lm); data.task={cfg.data.task} is not one. Unset it"
            + (" (train.cache_teacher keeps class logits)." if task.cacheable_teacher else ".")
        )
    engine_class(cfg.train.parallel).check_train(cfg.train)
    cfg.method.check_run(view)
    metric = cfg.eval.metric
    names = cfg.data.metric_names()
    if metric is not None and metric not in names:
        known = f"its metrics are {', '.join(names)}" if names else "it has no evaluation"
        raise ConfigError(
            f"eval.metric={metric!r} is not a metric of data.task={cfg.data.task}: {known}."
            + closest(metric, names)
        )
