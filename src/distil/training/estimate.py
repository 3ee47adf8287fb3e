"""Sizing a run before it starts (`distil validate --time`): a few real steps timed per stage.

Each plan step whose models exist is built as training builds it (real weights, the engine, the
optimizer); ``warmup`` steps run untimed, then ``steps`` optimiser steps on real batches are timed and
their median is multiplied by the stage's step count. Evaluation is estimated from the time of one
no-grad forward of a training micro-batch, per example, times the dev examples, the models scored per
evaluation (TED's filters add one each) and the number of evaluations. Nothing is written: no run
folder, no checkpoint, no cache. What the estimate leaves out is said with it (a teacher-logit cache is
built once before training and is timed here as the teacher's forward in every step).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from distil.adapters import forward_features
from distil.data.batching import row_lengths
from distil.run_config import RunConfig
from distil.training import assembly
from distil.training.batches import StepSchedule, step_loader
from distil.training.optim import build_scheduler
from distil.training.step import Stepper
from distil.types import FeatureRequest

__all__ = ["StageTime", "estimate_stage", "format_time"]


@dataclass(frozen=True)
class StageTime:
    """The estimated wall time of one stage (one run).

    Attributes:
        name: The plan step's name.
        steps: Optimiser steps it will take.
        seconds_per_step: Median of the timed steps.
        evaluations: Evaluations it will run.
        eval_seconds: Estimated time of all of them.
        setup_seconds: Loading the models and tokenising the data, as measured here.
        total_seconds: Setup, training and evaluation (a teacher cache's build and the export excluded).
        timed_steps: How many steps were timed.
    """

    name: str
    steps: int
    seconds_per_step: float
    evaluations: int
    eval_seconds: float
    setup_seconds: float
    total_seconds: float
    timed_steps: int


def _evaluations(cfg: RunConfig, total: int, per_epoch: int) -> int:
    every = cfg.train.eval_every
    count = total // every if every > 0 else max(1, min(cfg.train.epochs, -(-total // max(per_epoch, 1))))
    return count + (1 if every > 0 and total % every else 0)


def estimate_stage(cfg: RunConfig, name: str, *, steps: int = 5, warmup: int = 2) -> StageTime:
    """Time ``steps`` real optimiser steps of ``cfg`` (after ``warmup`` untimed ones); nothing is written.

    Raises:
        DistilError: Whatever training would reject before its first step.
    """
    began = time.perf_counter()
    prep = assembly.prepare(cfg, resume=False, overwrite=True)  # checks only; `start` would clear and write
    mods = assembly.assemble(cfg, prep)
    setup = time.perf_counter() - began
    tc, env, parts = cfg.train, prep.env, prep.parts
    task = parts.task
    schedule = StepSchedule(
        row_lengths(task.train_set), tc.batch_size, env.world, tc.grad_accum, tc.seed, task.group_by_length
    )
    total = tc.max_steps or schedule.steps_per_epoch * tc.epochs
    scheduler = build_scheduler(mods.optimizer, total, tc.warmup_ratio)
    scaler = torch.amp.GradScaler(env.device.type) if prep.precision.scaled else None
    stepper = Stepper(
        mods, prep.engine, parts.method, prep.precision, scheduler, scaler, tc.max_grad_norm, env, None
    )
    run = min(total, warmup + steps)
    loader = step_loader(
        schedule,
        task.train_set,
        task.collate,
        rank=env.rank,
        start=(0, 0),
        steps=run,
        workers=0,
        pin_memory=False,
    )
    times, examples, forward = [], 0, 0.0
    for i, batch in enumerate(loader):
        began = time.perf_counter()
        stepper.step(batch)
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        if i >= min(warmup, run - 1):
            times.append(time.perf_counter() - began)
            micro = batch.micro[0].to(env.device)
            student = mods.step.student
            with torch.no_grad(), prep.engine.unsharded(mods.wrapped):
                student.eval()
                began = time.perf_counter()
                forward_features(student, micro, FeatureRequest(logits=True))
                forward += time.perf_counter() - began
                student.train()
            examples += int(micro.input_ids.shape[0])
    per_step = statistics.median(times)
    dev = len(task.dev_set) if task.dev_set is not None else 0
    models = 1 + len(parts.method.evaluation_models(mods.step.student))
    evaluations = _evaluations(cfg, total, schedule.steps_per_epoch) if dev else 0
    eval_seconds = forward / max(examples, 1) * dev * models * evaluations
    whole = setup + per_step * total + eval_seconds
    return StageTime(name, total, per_step, evaluations, eval_seconds, setup, whole, len(times))


def format_time(seconds: float) -> str:
    """``1 h 05 min``, ``12 min 30 s`` or ``40 s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
