"""Checks that the sections of a run config fit together, run before any work (and by ``distil validate``).

Each section checks its own ranges when it is built; this module checks what needs two sections: the
method against the task (through its ``check_run`` and a `distil.types.RunView`), the teacher cache against
the task, and the selection metric against the task's metrics.
"""

from __future__ import annotations

import json

from distil.errors import ConfigError, closest
from distil.run_config import RunConfig
from distil.tasks import task_class
from distil.training.engines import engine_class, engine_options, traits_of
from distil.types import RunView

__all__ = ["check_run", "run_view", "teacher_cache_refusal"]


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
        engine=traits_of(cfg.engine),
    )


# Configs (as canonical JSON) that passed: the checks are a pure function of the config, and a run meets
# them where its config is built, where its plan is checked before the first step, and where training
# starts (configs built in code get the checks a YAML config gets). Each distinct config is checked once.
_PASSED: dict[str, None] = {}
_REMEMBERED = 256


def check_run(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` for a run config that training would reject, before any work.

    Raises:
        ConfigError: The method cannot train this task, the teacher cache does not apply, the engine
            cannot honour a training setting, or ``eval.metric`` is not a metric of the task.
    """
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key in _PASSED:
        return
    _check(cfg)
    if len(_PASSED) >= _REMEMBERED:
        _PASSED.pop(next(iter(_PASSED)))
    _PASSED[key] = None


def _check(cfg: RunConfig) -> None:
    view = run_view(cfg)
    refusal = teacher_cache_refusal(cfg, view)
    if refusal is not None:
        raise ConfigError(refusal)
    options = engine_options(cfg.engine)
    engine_class(options.name).check_train(options, cfg.train)
    cfg.method.check_run(view)
    metric = cfg.eval.metric
    names = cfg.data.metric_names()
    if metric is not None and metric not in names:
        known = f"its metrics are {', '.join(names)}" if names else "it has no evaluation"
        raise ConfigError(
            f"eval.metric={metric!r} is not a metric of data.task={cfg.data.task}: {known}."
            + closest(metric, names)
        )


def teacher_cache_refusal(cfg: RunConfig, view: RunView) -> str | None:
    """Why ``train.cache_teacher`` / ``train.cache_teacher_topk`` cannot serve this run (``None``: they can).

    The one rule of the teacher caches: the task must have per-example outputs small enough to keep (class
    logits) or be a causal LM (top-k of its token distributions), and the method must read only the
    teacher's logits of clean inputs (`MethodConfig.uncacheable_teacher`), at a temperature it declares for
    a top-k cache (`topk_temperature`).
    """
    task = task_class(cfg.data.task)
    tc, method = cfg.train, cfg.method_name
    why = cfg.method.uncacheable_teacher(view)
    if tc.cache_teacher:
        if not task.cacheable_teacher:
            return (
                "train.cache_teacher keeps the teacher's class logits of each example; "
                f"data.task={cfg.data.task} has per-token outputs (too large to keep). "
                "Set train.cache_teacher=false."
            )
        if why is not None:
            return (
                "train.cache_teacher keeps only the teacher's per-example logits of clean inputs; method "
                f"{method!r} {why}. Set train.cache_teacher=false."
            )
    if tc.cache_teacher_topk is not None:
        if task.head != "lm":
            return (
                "train.cache_teacher_topk caches the teacher's token distributions for token-level KD on a "
                f"causal LM (data.task=lm or chat); data.task={cfg.data.task} is not one. Unset it"
                + (" (train.cache_teacher keeps class logits)." if task.cacheable_teacher else ".")
            )
        if why is not None or getattr(cfg.method, "topk_temperature", None) is None:
            return (
                f"train.cache_teacher_topk: method {method!r} needs more than the teacher's token logits of "
                "clean inputs, or cannot read a top-k cache with these settings (KD can, with "
                "method.divergence=forward_kl): unset train.cache_teacher_topk."
            )
    return None
