"""THE training loop, shared by every method.

The loop forwards the student (and the frozen teacher, or its cached logits) for the features the
method requests, asks the method for its loss, and does the optimisation: gradient accumulation,
multi-process gradient averaging, mixed precision, clipping, scheduling, evaluation with best-checkpoint
selection, atomic checkpoints and exact resume. It has no branch on the method.

Batching is global and deterministic: each epoch's order comes from ``(seed, epoch)``; every global
batch is cut into ``world_size x grad_accum`` micro-batches and process ``r`` takes every
``world_size``-th one. Each micro-batch loss (a mean over its examples) is weighted by its share of the
global batch, so one optimiser step sees the mean over the global batch whatever the split: batch 8 x
accumulation 1, batch 2 x accumulation 4 and 2 processes x batch 4 give the same update.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from distil.adapters import forward_features
from distil.checks import check_run
from distil.data.batching import epoch_batches
from distil.errors import ConfigError, TrainingError
from distil.run_config import RunConfig
from distil.tasks import row_lengths
from distil.training.checkpoint import (
    FINISHED_MARKER,
    TrainerState,
    check_run_dir,
    clear_run_dir,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from distil.training.env import seed_everything
from distil.training.export import export_student, save_best
from distil.training.logging import MetricLogger
from distil.training.optim import build_optimizer, build_scheduler, trainable_parameters
from distil.training.setup import RunParts, build_run, describe
from distil.training.teacher_cache import TeacherCache
from distil.types import Batch, FeatureRequest, Features

__all__ = ["RunResult", "train"]


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_dir: The run's folder.
        student_dir: The exported student (``run_dir/student``).
        metrics: Dev metrics of the exported student.
        best_step: Step of the exported student's evaluation (``None`` without one).
        steps: Optimiser steps taken.
        train_seconds: Wall time of the training loop.
    """

    run_dir: Path
    student_dir: Path
    metrics: dict[str, float]
    best_step: int | None
    steps: int
    train_seconds: float

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> RunResult:
        """The result of a finished run, read from its recipe."""
        results = json.loads((run_dir / FINISHED_MARKER).read_text())["results"]
        return cls(
            run_dir, run_dir / "student", results.get("dev") or {}, results.get("best_step"),
            int(results.get("steps") or 0), float(results.get("train_seconds") or 0.0),
        )  # fmt: skip


def _micro_batches(indices: list[int], per_device: int, world: int, rank: int) -> list[list[int]]:
    chunks = [indices[i : i + per_device] for i in range(0, len(indices), per_device)]
    return chunks[rank::world]


def _all_reduce_grads(params: list[nn.Parameter], accelerator: Accelerator) -> None:
    """Average gradients over processes in one flat buffer; parameters without a gradient count as zero.

    Unused parameters (e.g. the parts of the student's last layer that a relation loss never reaches)
    therefore need no ``find_unused_parameters`` and cannot deadlock.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


class _Run:
    """State and helpers of one call to ``train``; kept private so the loop reads top to bottom."""

    def __init__(self, cfg: RunConfig, parts: RunParts, accelerator: Accelerator) -> None:
        self.cfg, self.parts, self.acc = cfg, parts, accelerator
        self.run_dir = Path(cfg.run_dir)
        self.device = accelerator.device
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.student_request: FeatureRequest = parts.method.student_request()
        self.teacher_request = parts.method.teacher_request()
        self.extras = parts.method.trainable_modules()
        self.cache: TeacherCache | None = None

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

    def teacher_features(self, batch: Batch) -> Features | None:
        if self.teacher_request is None:
            return None
        if self.cache is not None:
            return self.cache.features(batch)
        assert self.parts.teacher is not None
        with torch.no_grad():
            return forward_features(self.parts.teacher, batch, self.teacher_request)

    def selection_metric(self) -> str | None:
        return self.cfg.eval.metric or self.parts.task.main_metric


def _setup(cfg: RunConfig, resume: bool, overwrite: bool) -> tuple[RunParts, Accelerator]:
    check_run(cfg)  # configs built in code (plans, the API) get the checks a YAML config gets
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision)
    run_dir = Path(cfg.run_dir)
    # Every check runs before the first write: a bad run never touches an existing folder.
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    seed_everything(cfg.train.seed)
    parts = build_run(cfg)
    # Cached outputs would be of clean inputs, and token-level logits ([N, S, V]) are too large to keep.
    cacheable = (
        parts.method.teacher_request() == FeatureRequest(logits=True)
        and not parts.method.corrupts_inputs
        and parts.task.cacheable_teacher
    )
    if cfg.train.cache_teacher and not cacheable:
        raise ConfigError(
            "train.cache_teacher needs a method that uses only the teacher's per-example logits of clean "
            "inputs (classification/regression); "
            f"{cfg.method_name!r} needs more (set train.cache_teacher=false)."
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if overwrite:
            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    accelerator.wait_for_everyone()
    return parts, accelerator


def train(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> RunResult:
    """Train one run: ``cfg.models.student`` with ``cfg.method``, then export the best student.

    One run only: work of several runs (stages, probes) is a plan above this loop (`distil.plans`).

    Args:
        cfg: The validated run configuration.
        resume: Continue the unfinished run in ``cfg.run_dir`` from its latest checkpoint.
        overwrite: Replace whatever ``cfg.run_dir`` holds.
        progress: Show a progress bar.

    Raises:
        DistilError: Bad input (before anything is written) or a non-finite loss (the run stops).
    """
    parts, acc = _setup(cfg, resume, overwrite)
    run = _Run(cfg, parts, acc)
    tc = cfg.train
    student, extras = parts.student.to(run.device).train(), run.extras.to(run.device).train()
    if parts.teacher is not None:
        parts.teacher.to(run.device).eval()
    named = trainable_parameters([student, extras])
    params = [p for _, p in named]
    optimizer = acc.prepare_optimizer(build_optimizer(named, tc), device_placement=True)
    global_batch = tc.batch_size * run.world * tc.grad_accum
    task = parts.task
    lengths = row_lengths(task.train_set)
    steps_per_epoch = (
        len(lengths) // global_batch if run.world > 1 else math.ceil(len(lengths) / global_batch)
    )
    total_steps = tc.max_steps or steps_per_epoch * tc.epochs
    scheduler = build_scheduler(optimizer.optimizer, total_steps, tc.warmup_ratio)
    state = TrainerState(world_size=run.world)
    if resume:
        ckpt = latest_checkpoint(run.run_dir)
        assert ckpt is not None
        state = load_checkpoint(
            ckpt, student, extras, optimizer.optimizer, scheduler, parts.method, rank=run.rank
        )
        if state.world_size != run.world:
            raise ConfigError(
                f"{ckpt} was written by {state.world_size} processes; resume with the same count."
            )
    if tc.cache_teacher:
        assert parts.teacher is not None
        run.cache = TeacherCache.build(
            parts.teacher, task.train_set, task.collate, cfg.eval.batch_size, run.device
        )
    logger = MetricLogger(run.run_dir, tensorboard=tc.tensorboard, enabled=acc.is_main_process)
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        disable=not (progress and acc.is_main_process),
        desc=f"{cfg.method_name} {parts.task.name}",
        unit="step",
        dynamic_ncols=True,
    )
    start = time.perf_counter()

    def checkpoint() -> Path:
        return save_checkpoint(
            run.run_dir,
            state,
            student,
            extras,
            optimizer.optimizer,
            scheduler,
            parts.method.state_dict(),
            keep=tc.keep_checkpoints,
            rank=run.rank,
            barrier=run.barrier,
        )

    def evaluate_and_select() -> None:
        state.eval_step = state.step
        if acc.is_main_process and task.dev_set is not None:
            metrics = task.evaluate(student, cfg.eval.batch_size)
            logger.write(state.step, {f"eval/{k}": v for k, v in metrics.items()})
            key = run.selection_metric()
            if key not in metrics:
                raise ConfigError(f"eval.metric {key!r} is not among the task's metrics {sorted(metrics)}.")
            improved = state.best_metric is None or metrics[key] > state.best_metric
            if cfg.eval.select == "last" or improved:
                state.best_metric, state.best_step, state.best_eval = metrics[key], state.step, metrics
            if cfg.eval.select == "best" and improved:
                save_best(parts.method.export_model(student), parts.tokenizer, run.run_dir, extras)
            bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        run.barrier()

    def step_once(indices: list[int]) -> None:
        sums: dict[str, float] = defaultdict(float)
        for chunk in _micro_batches(indices, tc.batch_size, run.world, run.rank):
            batch = task.collate([task.train_set[i] for i in chunk]).to(run.device)
            # Methods that corrupt their inputs (MLM masking) do it here, before both forwards; it may
            # draw from the global RNG, whose state checkpoints restore.
            batch = parts.method.prepare_batch(batch)
            share = len(chunk) / len(indices)
            with acc.autocast():
                student_features = forward_features(student, batch, run.student_request)
                out = parts.method.loss(batch, student_features, run.teacher_features(batch))
            acc.backward(out.total * share * run.world)
            sums["total"] += out.total.item() * share
            for name, value in out.parts.items():
                sums[name] += value.item() * share
        reduced = _reduce_sums(sums, acc)
        if not all(math.isfinite(v) for v in reduced.values()):
            last = latest_checkpoint(run.run_dir)
            raise TrainingError(
                f"Non-finite loss at step {state.step + 1}: {reduced}. Last good checkpoint: "
                f"{last or 'none saved yet'}. Lower train.lr, keep train.max_grad_norm > 0, or use "
                "train.mixed_precision=no; resume with --resume."
            )
        if run.world > 1:
            _all_reduce_grads(params, acc)
        if tc.max_grad_norm > 0:
            acc.clip_grad_norm_(params, tc.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        logger.accumulate(reduced, len(indices))
        parts.method.on_step_end(state.step + 1)

    while state.step < total_steps:
        # Several processes drop an epoch's last short batch: every process must get a micro-batch.
        batches = epoch_batches(
            lengths,
            global_batch,
            seed=tc.seed,
            epoch=state.epoch,
            group_by_length=task.group_by_length,
            drop_last=run.world > 1,
        )
        for b in range(state.batch_in_epoch, len(batches)):
            if state.step >= total_steps:
                break
            step_once(batches[b])
            state.step, state.batch_in_epoch = state.step + 1, b + 1
            bar.update(1)
            if state.step % tc.log_every == 0 or state.step == total_steps:
                record = logger.flush(
                    state.step,
                    {"lr": float(scheduler.get_last_lr()[0]), "epoch": state.epoch}
                    | (
                        {"cuda_peak_mem_gib": torch.cuda.max_memory_allocated(run.device) / 2**30}
                        if run.device.type == "cuda"
                        else {}
                    ),
                )
                bar.set_postfix_str(f"loss {record.get('loss/total', float('nan')):.4f}", refresh=False)
            evaluated = tc.eval_every > 0 and state.step % tc.eval_every == 0
            if evaluated:
                evaluate_and_select()
            if (tc.checkpoint_every > 0 and state.step % tc.checkpoint_every == 0) or (
                tc.checkpoint_every == 0 and evaluated
            ):
                checkpoint()
        if state.batch_in_epoch >= len(batches):
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if tc.eval_every == 0:
                evaluate_and_select()
                if tc.checkpoint_every == 0 and state.step < total_steps:
                    checkpoint()
    bar.close()
    if state.eval_step != state.step:
        evaluate_and_select()
    seconds = time.perf_counter() - start
    metrics = state.best_eval or {}
    result = RunResult(run.run_dir, run.run_dir / "student", metrics, state.best_step, state.step, seconds)
    if acc.is_main_process:
        recipe = {
            "method": cfg.method_name,
            "config": cfg.to_dict(),
            "built": describe(parts, cfg),
            "results": {
                "dev": metrics,
                "best_metric": state.best_metric,
                "best_step": state.best_step,
                "selection_metric": run.selection_metric(),
                "steps": state.step,
                "train_seconds": seconds,
                "world_size": run.world,
            },
        }
        export_student(
            parts.method.export_model(student), parts.tokenizer, run.run_dir, recipe, extras=extras
        )
    logger.close()
    acc.wait_for_everyone()
    return result


def _reduce_sums(sums: dict[str, float], acc: Accelerator) -> dict[str, float]:
    if acc.num_processes == 1:
        return dict(sums)
    keys = sorted(sums)
    values = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device), reduction="sum")
    return {k: float(v) for k, v in zip(keys, values.tolist(), strict=True)}
