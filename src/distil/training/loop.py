"""THE training loop, shared by every method; it trains exactly one run.

The loop forwards the frozen teacher (or reads its cached logits) and the student for the features the
method requests, asks the method for its loss, and does the optimisation on the distributed engine
(`distil.training.engines`: one process, DDP or FSDP2): gradient accumulation, the precision policy,
clipping, scheduling, evaluation with best-checkpoint selection, verified checkpoints and exact resume. It
has no branch on the method, and knows nothing of stages or probes (`distil.plans`).

Batching is global and deterministic (`distil.training.batches`): each step's global batch is cut into
``world_size x grad_accum`` micro-batches and each micro-batch loss (a mean over its examples) is weighted
by its share of the global batch, so one optimiser step sees the mean over the global batch whatever the
split: batch 8 x accumulation 1, batch 2 x accumulation 4 and 2 processes x batch 4 give the same update
(with dropout off: each process draws its own dropout and masking stream). Loss terms stay on the device
and are synchronised once per logging interval.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from distil.data.batching import row_lengths
from distil.errors import ConfigError, DataError, TrainingError
from distil.evaluation.shards import Shard
from distil.models.loading import resolve_model_path
from distil.run_config import RunConfig
from distil.training import assembly
from distil.training.batches import StepSchedule, step_loader
from distil.training.checkpoint import (
    FINISHED_MARKER,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    method_state,
    save_checkpoint,
)
from distil.training.dist import DistEnv
from distil.training.export import export_student, save_best
from distil.training.logging import MetricLogger, progress_line
from distil.training.optim import build_scheduler
from distil.training.resume import read_resumes, record_resume
from distil.training.rng import process_seed, seed_everything
from distil.training.setup import describe
from distil.training.step import Stepper
from distil.training.teacher_cache import TeacherCache
from distil.training.topk_cache import TopKCache
from distil.types import Runtime

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


@dataclass
class _Window:
    """The loss terms of the steps since the last log line, kept on the device until then."""

    sums: dict[str, Tensor] = field(default_factory=dict)
    totals: list[tuple[int, Tensor]] = field(default_factory=list)
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, step: int, terms: dict[str, Tensor], samples: int) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.totals.append((step, terms["total"]))
        self.samples += samples


def _restore(
    prep: assembly.Prepared,
    mods: assembly.Modules,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    seed: int,
) -> tuple[TrainerState, Path]:
    """Load the newest intact checkpoint whose tensors load; an older intact one when they do not.

    A checkpoint's manifest can check out while its tensors cannot be read (written by an incompatible
    library, damaged in a way the digests missed): each such checkpoint is named and skipped, as a
    checkpoint with a bad manifest is. Every tensor is overwritten by the checkpoint that loads, so a
    partial read of a newer one leaves nothing behind.

    Raises:
        DataError: No intact checkpoint loads (the last error), or a checkpoint that changed the student's
            shapes failed after the change (an older one cannot be loaded into the narrowed model).
    """
    env, method, engine = prep.env, prep.parts.method, prep.engine
    assert prep.checkpoint is not None
    ckpt: Path = prep.checkpoint
    skipped = list(prep.skipped)
    while True:
        if env.is_main:
            for line in skipped:
                print(f"[distil] skipping checkpoint {line}; falling back to {ckpt.name}")
        skipped = []
        resized = False
        try:
            # The method's state first (read once: HomoDistil's EMAs are twice the model): a method whose
            # state fixes the student's shapes (HomoDistil's pruned widths) applies them, so the saved
            # weights and moments load into tensors of their own shapes.
            saved = method_state(ckpt)
            change = method.restore_shapes(saved)
            if change is not None:
                assembly.resize(mods, engine, change)
                resized = True
            method.load_state_dict(saved)
            state = load_checkpoint(env, ckpt, mods.wrapped, mods.optimizer, scheduler, scaler, seed=seed)
            return state, ckpt
        except DataError as err:
            skipped = [f"{ckpt.name}: {err}"]
            following = latest_checkpoint(ckpt.parent.parent, skipped=skipped, before=ckpt.name)
            if resized or following is None:
                raise
            ckpt = following


def train(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> RunResult:
    """Train one run: ``cfg.models.student`` with ``cfg.method``, then export the best student.

    One run only: work of several runs (stages, probes) is a plan above this loop (`distil.plans`).

    Args:
        cfg: The validated run configuration.
        resume: Continue the unfinished run in ``cfg.run_dir`` from its newest intact checkpoint (a run
            without one starts again).
        overwrite: Replace whatever ``cfg.run_dir`` holds.
        progress: Show a progress bar.

    Raises:
        DistilError: Bad input (before anything is written) or a non-finite loss (the run stops).
    """
    prep = assembly.prepare(cfg, resume, overwrite)
    assembly.start(cfg, prep)
    tc, env, engine, parts, precision = cfg.train, prep.env, prep.engine, prep.parts, prep.precision
    run_dir, task, method = Path(cfg.run_dir), parts.task, parts.method
    mods = assembly.assemble(cfg, prep)
    # Before a resume restores anything: a method that narrows the student (HomoDistil) cuts its fresh
    # copy to the checkpoint's widths with the engine's cutter.
    method.attach(
        Runtime(
            seed=tc.seed,
            call_student=lambda fn: engine.call_student(mods.wrapped, fn),  # mods.wrapped as it is then
            synced=engine.traits.sharded and env.world > 1,
            cut_parameter=engine.cut_parameter,
        )
    )
    schedule = StepSchedule(
        row_lengths(task.train_set), tc.batch_size, env.world, tc.grad_accum, tc.seed, task.group_by_length
    )
    total_steps = tc.max_steps or schedule.steps_per_epoch * tc.epochs
    scheduler = build_scheduler(mods.optimizer, total_steps, tc.warmup_ratio)
    scaler = torch.amp.GradScaler(env.device.type) if precision.scaled else None
    seed_everything(process_seed(tc.seed, env.rank))  # each process's own dropout and masking stream
    state = TrainerState(world_size=env.world, global_batch=schedule.global_batch)
    if prep.checkpoint is not None:
        state, ckpt = _restore(prep, mods, scheduler, scaler, tc.seed)
        state.world_size, state.global_batch = env.world, schedule.global_batch
        if env.is_main:
            # Only now that the checkpoint has loaded: a failed resume leaves config.yaml as it was.
            assembly.write_config(cfg, run_dir)
            record_resume(run_dir, state.step, prep.changes)
            changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in prep.changes.items())
            print(
                f"[distil] resuming {run_dir} from {ckpt.name} with {env.world} process(es)"
                + (f"; changed: {changed}" if changed else "")
            )
        env.barrier()
    shard = Shard(env.rank, env.world, env.gather_objects)
    cache: TeacherCache | TopKCache | None = None
    if tc.cache_teacher:
        assert mods.teacher is not None
        cache = TeacherCache.build(
            mods.teacher, task.train_set, task.collate, cfg.eval.batch_size, env.device, shard
        )
    elif tc.cache_teacher_topk is not None:
        assert mods.teacher is not None and cfg.models.teacher is not None
        temperature = method.topk_temperature
        assert temperature is not None  # `checks.teacher_cache_refusal` refuses a method that cannot read it
        # The top-k cache serves causal LM (`checks.teacher_cache_refusal`), which keeps token blocks.
        assert task.cache_root is not None
        root = task.cache_root / "teacher-topk"
        cache, built = TopKCache.open_or_build(
            mods.teacher, Path(resolve_model_path(cfg.models.teacher)), task.train_set, task.collate,
            k=tc.cache_teacher_topk, temperature=temperature, root=root, batch_size=cfg.eval.batch_size,
            device=env.device, shard=shard, barrier=env.barrier, is_main=env.is_main,
        )  # fmt: skip
        if env.is_main:
            what = "wrote" if built else "reusing"
            print(
                f"[distil] teacher top-k cache: {what} {cache.folder} ({cache.bytes_per_token} bytes a token)"
            )
    stepper = Stepper(mods, engine, method, precision, scheduler, scaler, tc.max_grad_norm, env, cache)
    logger = MetricLogger(run_dir, trackers=tc.trackers, config=cfg.to_dict(), enabled=env.is_main)
    # A bar only on a terminal: redirected to a file, tqdm's carriage-return frames are noise (lines below).
    bar = tqdm(
        total=total_steps, initial=state.step, disable=not (progress and env.is_main and sys.stderr.isatty()),
        desc=f"{cfg.method_name} {task.name}", unit="step", dynamic_ncols=True,
    )  # fmt: skip
    window = _Window()
    selection = cfg.eval.metric or task.main_metric
    start = time.perf_counter()
    # No progress bar (--no-progress, or output not to a terminal): occasional lines instead of silence.
    lines_due = tc.progress_seconds > 0 and not (progress and sys.stderr.isatty())
    last_line, first_step = start, state.step

    def flush(extra: dict[str, float]) -> dict[str, float]:
        """Synchronise the window's terms once; stop on a non-finite step; write the log line."""
        nonlocal window
        if not window.totals:
            return {}
        keys = sorted(window.sums)
        sums = env.all_reduce_sum(torch.stack([window.sums[k].float() for k in keys])).tolist()
        totals = env.all_reduce_sum(torch.stack([t.float() for _, t in window.totals])).tolist()
        bad = next(
            (step for (step, _), t in zip(window.totals, totals, strict=True) if not math.isfinite(t)), None
        )
        if bad is not None:
            last = latest_checkpoint(run_dir)
            raise TrainingError(
                f"Non-finite loss at step {bad}: {dict(zip(keys, sums, strict=True))}. Last good checkpoint: "
                f"{last or 'none saved yet'}. Lower train.lr, keep train.max_grad_norm > 0, or use "
                "train.precision=fp32; resume with --resume."
            )
        elapsed = max(time.perf_counter() - window.started, 1e-9)
        steps = len(window.totals)
        record = {f"loss/{k}": v / steps for k, v in zip(keys, sums, strict=True)}
        record |= extra | {"samples_per_s": window.samples / elapsed}
        logger.write(state.step, record)
        window = _Window()
        return record

    def checkpoint() -> None:
        flush({})  # a checkpoint never holds weights a non-finite step produced
        save_checkpoint(
            env, run_dir, state, mods.wrapped, mods.optimizer, scheduler, scaler, method.state_dict(),
            keep=tc.keep_checkpoints,
        )  # fmt: skip

    def evaluate_and_select() -> None:
        flush({})
        state.eval_step = state.step
        if task.dev_set is None:
            return
        with engine.unsharded(mods.wrapped):
            metrics = task.evaluate(mods.step.student, cfg.eval.batch_size, shard)
            extra = {
                f"{name}/{k}": v
                for name, model in method.evaluation_models(mods.step.student).items()
                # Called like the student, with its output type (`Method.evaluation_models`).
                for k, v in task.evaluate(cast(PreTrainedModel, model), cfg.eval.batch_size, shard).items()
            }  # e.g. TED's filters, each scored with its own head
        logger.write(state.step, {f"eval/{k}": v for k, v in (metrics | extra).items()})
        if selection not in metrics:
            raise ConfigError(f"eval.metric {selection!r} is not among the task's metrics {sorted(metrics)}.")
        improved = state.best_metric is None or metrics[selection] > state.best_metric
        if cfg.eval.select == "last" or improved:
            state.best_metric, state.best_step, state.best_eval = metrics[selection], state.step, metrics
        if cfg.eval.select == "best" and improved:
            full = engine.exportable(mods.wrapped, mods.step)
            if full is not None:
                save_best(method.export_model(full[0]), parts.tokenizer, run_dir, full[1])
        if env.is_main:
            shown = metrics | extra
            bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        env.barrier()

    loader = step_loader(
        schedule, task.train_set, task.collate, rank=env.rank, start=(state.epoch, state.batch_in_epoch),
        steps=total_steps - state.step, workers=_workers(tc.num_workers, env),
        pin_memory=env.device.type == "cuda",
    )  # fmt: skip
    for step_batch in loader:
        terms = stepper.step(step_batch)
        change = method.on_step_end(state.step + 1)
        if change is not None:  # the method narrowed the student (HomoDistil's prune events)
            assembly.resize(mods, engine, change)
        state.step = state.step + 1
        state.epoch, state.batch_in_epoch = step_batch.epoch, step_batch.index + 1
        window.add(state.step, terms, step_batch.examples)
        bar.update(1)
        # Without a progress bar, a line every progress_seconds: one process synchronises its window for
        # it; several print at their logging steps (each process's clock must not decide a collective).
        due = lines_due and time.perf_counter() - last_line >= tc.progress_seconds
        if state.step % tc.log_every == 0 or state.step == total_steps or (due and env.world == 1):
            extra = {"lr": float(scheduler.get_last_lr()[0]), "epoch": float(state.epoch)}
            if env.device.type == "cuda":
                extra["cuda_peak_mem_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
            record = flush(extra)
            bar.set_postfix_str(f"loss {record.get('loss/total', float('nan')):.4f}", refresh=False)
            if due and env.is_main:
                last_line = time.perf_counter()
                print(
                    progress_line(state.step, total_steps, record, last_line - start, state.step - first_step)
                )
        evaluated = tc.eval_every > 0 and state.step % tc.eval_every == 0
        if evaluated:
            evaluate_and_select()
        if (tc.checkpoint_every > 0 and state.step % tc.checkpoint_every == 0) or (
            tc.checkpoint_every == 0 and evaluated
        ):
            checkpoint()
        if step_batch.last_in_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if tc.eval_every == 0:
                evaluate_and_select()
                if tc.checkpoint_every == 0 and state.step < total_steps:
                    checkpoint()
    bar.close()
    flush({})
    if state.eval_step != state.step:
        evaluate_and_select()
    seconds = time.perf_counter() - start
    warnings = method.end_notes()  # what the method saw go wrong (a filter that learned nothing)
    if env.is_main:
        for line in warnings:
            print(f"[distil] warning: {line}")
    metrics = state.best_eval or {}
    result = RunResult(run_dir, run_dir / "student", metrics, state.best_step, state.step, seconds)
    full = engine.exportable(mods.wrapped, mods.step)
    if full is not None:
        recipe = {
            "method": cfg.method_name,
            "config": cfg.to_dict(),
            "built": describe(parts, cfg),
            "results": {
                "dev": metrics,
                "best_metric": state.best_metric,
                "best_step": state.best_step,
                "selection_metric": selection,
                "steps": state.step,
                "train_seconds": seconds,
                "world_size": env.world,
                "parallel": engine.name,
                "precision": precision.name,
                "resumes": read_resumes(run_dir),
                "warnings": warnings,
            },
        }
        export_student(method.export_model(full[0]), parts.tokenizer, run_dir, recipe, extras=full[1])
    logger.close()
    env.barrier()
    return result


def _workers(requested: int | None, env: DistEnv) -> int:
    """DataLoader workers: as asked, else none on CPUs (they would compete for the cores) and 2 on GPUs."""
    if requested is not None:
        return requested
    return 2 if env.device.type == "cuda" else 0
