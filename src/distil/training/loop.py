"""THE training loop, shared by every method; it trains exactly one run.

The loop forwards the frozen teacher (or reads its cached logits) and the student for the features the
method requests, asks the method for its loss, and does the optimisation on the distributed engine
(`distil.training.engine`: one process, DDP or FSDP2): gradient accumulation, the precision policy,
clipping, scheduling, evaluation with best-checkpoint selection, verified checkpoints and exact resume. It
has no branch on the method, and knows nothing of stages or probes (`distil.plans`).

Batching is global and deterministic (`distil.training.data`): each step's global batch is cut into
``world_size x grad_accum`` micro-batches and each micro-batch loss (a mean over its examples) is weighted
by its share of the global batch, so one optimiser step sees the mean over the global batch whatever the
split: batch 8 x accumulation 1, batch 2 x accumulation 4 and 2 processes x batch 4 give the same update
(with dropout off: each process draws its own dropout and masking stream). Loss terms stay on the device
and are synchronised once per logging interval.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from tqdm.auto import tqdm

from distil.adapters import forward_features
from distil.checks import check_run
from distil.data.batching import row_lengths
from distil.errors import ConfigError, TrainingError
from distil.evaluation.shards import Shard
from distil.models.architectures import get_layers
from distil.run_config import RunConfig
from distil.training.checkpoint import (
    FINISHED_MARKER,
    TrainerState,
    check_run_dir,
    clear_run_dir,
    find_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from distil.training.data import StepPlan, step_loader
from distil.training.dist import DistEnv, check_launcher, check_shared_run_dir, init_distributed
from distil.training.engine import Engine, StepModule, resolve_parallel
from distil.training.env import process_seed, seed_everything
from distil.training.export import export_student, save_best
from distil.training.logging import MetricLogger
from distil.training.optim import build_optimizer, build_scheduler, optimizer_step, trainable_parameters
from distil.training.precision import Precision, precision_policy
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


@dataclass
class _Prepared:
    """What `_prepare` checked and built, before the first write."""

    env: DistEnv
    engine: Engine
    precision: Precision
    parts: RunParts
    resume: bool
    clear: bool


def _prepare(cfg: RunConfig, resume: bool, overwrite: bool) -> _Prepared:
    """Every check, then the task, the models and the method; nothing is written before this returns."""
    tc = cfg.train
    check_run(cfg)  # configs built in code (plans, the API) get the checks a YAML config gets
    env = init_distributed(tc.dist_timeout_minutes)
    parallel = resolve_parallel(tc.parallel, env.world, env.device, cpu_offload=tc.cpu_offload)
    check_launcher(
        parallel, tc.precision, cpu_offload=tc.cpu_offload, checkpointing=tc.activation_checkpointing,
        compile=tc.compile,
    )  # fmt: skip
    precision = precision_policy(tc.precision, cfg.models.teacher_dtype, env.device)
    run_dir = Path(cfg.run_dir)
    # --resume of a run killed before its first checkpoint starts it again: there is nothing to lose.
    restart = resume and _never_saved(run_dir)
    resume = resume and not restart
    check_run_dir(run_dir, resume=resume, overwrite=overwrite or restart)
    check_shared_run_dir(env, run_dir)
    seed_everything(tc.seed)  # identical initialisation in every process
    meta = parallel == "fsdp" and tc.ram_efficient_loading and not env.is_main
    parts = build_run(cfg, precision=precision, meta=meta, prepare_order=env.main_first)
    # Cached outputs would be of clean inputs, and token-level logits ([N, S, V]) are too large to keep.
    cacheable = (
        parts.method.teacher_request() == FeatureRequest(logits=True)
        and not parts.method.corrupts_inputs
        and parts.task.cacheable_teacher
    )
    if tc.cache_teacher and not cacheable:
        raise ConfigError(
            "train.cache_teacher needs a method that uses only the teacher's per-example logits of clean "
            f"inputs (classification/regression); {cfg.method_name!r} needs more: set "
            "train.cache_teacher=false."
        )
    if tc.compile and parts.method.student_request().qkv_layers:
        raise ConfigError(
            f"train.compile: method {cfg.method_name!r} captures the student's queries, keys and values with "
            "hooks, which compiled blocks do not run; set train.compile=false."
        )
    engine = Engine(env, precision, parallel, cpu_offload=tc.cpu_offload)
    return _Prepared(env, engine, precision, parts, resume, overwrite or restart)


def _never_saved(run_dir: Path) -> bool:
    """A run directory a killed run left before its first checkpoint (no checkpoint, not finished)."""
    return not (run_dir / FINISHED_MARKER).exists() and not find_checkpoints(run_dir)


def _start(cfg: RunConfig, prep: _Prepared) -> None:
    env, run_dir = prep.env, Path(cfg.run_dir)
    env.barrier()
    if env.is_main:
        if prep.clear:
            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    env.barrier()


def _rank0_state(module: nn.Module, env: DistEnv) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Process 0's full weights and buffers (on the CPU) before sharding; the module then goes to meta."""
    if not env.is_main:
        return {}, {}
    weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    buffers = {k: v.detach().cpu().clone() for k, v in module.named_buffers()}
    module.to("meta")
    return weights, buffers


def _load_from_rank0(
    module: nn.Module, env: DistEnv, weights: dict[str, Any], buffers: dict[str, Tensor]
) -> None:
    """Fill a sharded module built on the meta device with process 0's weights, shard by shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    module.to_empty(device=env.device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(module, weights, options=options)
    for name, buffer in module.named_buffers():  # non-persistent buffers are in no state dict
        if env.is_main:
            buffer.copy_(buffers[name].to(buffer.device))
        dist.broadcast(buffer, src=0)


@dataclass
class _Modules:
    """The assembled modules of a run."""

    step: StepModule
    runner: nn.Module
    teacher: Any
    params: list[nn.Parameter]
    optimizer: torch.optim.AdamW


def _assemble(cfg: RunConfig, prep: _Prepared) -> _Modules:
    """Wrap the student and the method's modules on the engine, shard the teacher, build the optimizer."""
    tc, env, engine, parts = cfg.train, prep.env, prep.engine, prep.parts
    method, student = parts.method, parts.student
    extras = method.trainable_modules().to(dtype=prep.precision.param_dtype)
    if tc.activation_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.compile:
        for block in get_layers(student):
            block.compile()
    step = StepModule(student, extras, method, method.student_request())
    ram_efficient = engine.sharded and tc.ram_efficient_loading
    if ram_efficient:
        weights, buffers = _rank0_state(step, env)
    else:
        step.to(env.device)
    layers = len(get_layers(student))
    runner = engine.wrap(step, {i % layers for i in step.request.qkv_layers})
    if ram_efficient:
        _load_from_rank0(step, env, weights, buffers)
    teacher = parts.teacher
    if teacher is not None:
        if ram_efficient:
            t_weights, t_buffers = _rank0_state(teacher, env)
            teacher = engine.shard_teacher(teacher)
            _load_from_rank0(teacher, env, t_weights, t_buffers)
        else:
            _move(teacher, env.device)
            teacher = engine.shard_teacher(teacher)
        teacher.eval()
    student.train()
    named = trainable_parameters([step.student, step.extras])
    optimizer = build_optimizer(named, tc, fused=engine.fused_optimizer())
    return _Modules(step, runner, teacher, [p for _, p in named], optimizer)


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
    prep = _prepare(cfg, resume, overwrite)
    _start(cfg, prep)
    tc, env, engine, parts, precision = cfg.train, prep.env, prep.engine, prep.parts, prep.precision
    run_dir, task, method = Path(cfg.run_dir), parts.task, parts.method
    mods = _assemble(cfg, prep)
    plan = StepPlan(
        row_lengths(task.train_set), tc.batch_size, env.world, tc.grad_accum, tc.seed, task.group_by_length
    )
    total_steps = tc.max_steps or plan.steps_per_epoch * tc.epochs
    scheduler = build_scheduler(mods.optimizer, total_steps, tc.warmup_ratio)
    scaler = torch.amp.GradScaler(env.device.type) if precision.scaled else None
    seed_everything(process_seed(tc.seed, env.rank))  # each process's own dropout and masking stream
    state = TrainerState(world_size=env.world, global_batch=plan.global_batch)
    if prep.resume:
        skipped: list[str] = []
        ckpt = latest_checkpoint(run_dir, skipped=skipped)
        if ckpt is None:
            raise ConfigError(
                f"--resume: no intact checkpoint in {run_dir / 'checkpoints'} ({'; '.join(skipped)}). "
                "Start anew with --overwrite."
            )
        if env.is_main:
            for line in skipped:
                print(f"[distil] skipping checkpoint {line}; falling back to {ckpt.name}")
        state = load_checkpoint(
            env, ckpt, mods.runner, mods.optimizer, scheduler, scaler, method, seed=tc.seed
        )
        if state.global_batch and state.global_batch != plan.global_batch:
            raise ConfigError(
                f"{ckpt} trained with global batches of {state.global_batch} examples, this run has "
                f"{plan.global_batch} (train.batch_size x processes x train.grad_accum); keep the global "
                "batch (e.g. double train.grad_accum when halving the processes)."
            )
        state.world_size, state.global_batch = env.world, plan.global_batch
        if env.is_main:
            print(f"[distil] resuming {run_dir} from {ckpt.name} with {env.world} process(es)")
    shard = Shard(env.rank, env.world, env.gather_objects)
    teacher_request = method.teacher_request()
    cache: TeacherCache | None = None
    if tc.cache_teacher:
        assert mods.teacher is not None
        cache = TeacherCache.build(
            mods.teacher, task.train_set, task.collate, cfg.eval.batch_size, env.device, shard
        )
    cast_teacher = (
        teacher_request is not None
        and not precision.mixed
        and precision.teacher_dtype != precision.param_dtype
    )

    def teacher_features(batch: Batch) -> Features | None:
        if teacher_request is None:
            return None
        if cache is not None:
            return cache.features(batch)
        with torch.no_grad():
            features = forward_features(mods.teacher, batch, teacher_request)
        return features.to_dtype(precision.param_dtype) if cast_teacher else features

    logger = MetricLogger(run_dir, tensorboard=tc.tensorboard, enabled=env.is_main)
    bar = tqdm(
        total=total_steps, initial=state.step, disable=not (progress and env.is_main),
        desc=f"{cfg.method_name} {task.name}", unit="step", dynamic_ncols=True,
    )  # fmt: skip
    window = _Window()
    selection = cfg.eval.metric or task.main_metric
    start = time.perf_counter()

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
            env, run_dir, state, mods.runner, mods.optimizer, scheduler, scaler, method.state_dict(),
            keep=tc.keep_checkpoints,
        )  # fmt: skip

    def evaluate_and_select() -> None:
        flush({})
        state.eval_step = state.step
        if task.dev_set is None:
            return
        with engine.unsharded(mods.runner):
            metrics = task.evaluate(mods.step.student, cfg.eval.batch_size, shard)
        logger.write(state.step, {f"eval/{k}": v for k, v in metrics.items()})
        if selection not in metrics:
            raise ConfigError(f"eval.metric {selection!r} is not among the task's metrics {sorted(metrics)}.")
        improved = state.best_metric is None or metrics[selection] > state.best_metric
        if cfg.eval.select == "last" or improved:
            state.best_metric, state.best_step, state.best_eval = metrics[selection], state.step, metrics
        if cfg.eval.select == "best" and improved:
            full = engine.exportable(mods.runner, mods.step)
            if full is not None:
                save_best(method.export_model(full[0]), parts.tokenizer, run_dir, full[1])
        if env.is_main:
            bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        env.barrier()

    loader = step_loader(
        plan, task.train_set, task.collate, rank=env.rank, start=(state.epoch, state.batch_in_epoch),
        steps=total_steps - state.step, workers=_workers(tc.num_workers, env),
        pin_memory=env.device.type == "cuda",
    )  # fmt: skip
    for step_batch in loader:
        terms: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=env.device))
        last = len(step_batch.micro) - 1
        for i, (micro, share) in enumerate(zip(step_batch.micro, step_batch.shares, strict=True)):
            with engine.accumulating(mods.runner, sync=i == last):
                batch = method.prepare_batch(micro.to(env.device, non_blocking=True))
                teacher = teacher_features(batch)
                with engine.autocast():
                    total, named_parts = mods.runner(batch, teacher)
                loss = total * share * env.world
                (scaler.scale(loss) if scaler is not None else loss).backward()
            terms["total"] = terms["total"] + total.detach().float() * share
            for name, value in named_parts.items():
                terms[name] = terms[name] + value.detach().float() * share
        optimizer_step(mods.optimizer, scheduler, mods.params, max_grad_norm=tc.max_grad_norm, scaler=scaler)
        method.on_step_end(state.step + 1)
        state.step = state.step + 1
        state.epoch, state.batch_in_epoch = step_batch.epoch, step_batch.index + 1
        window.add(state.step, dict(terms), step_batch.examples)
        bar.update(1)
        if state.step % tc.log_every == 0 or state.step == total_steps:
            extra = {"lr": float(scheduler.get_last_lr()[0]), "epoch": float(state.epoch)}
            if env.device.type == "cuda":
                extra["cuda_peak_mem_gib"] = torch.cuda.max_memory_allocated(env.device) / 2**30
            record = flush(extra)
            bar.set_postfix_str(f"loss {record.get('loss/total', float('nan')):.4f}", refresh=False)
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
    metrics = state.best_eval or {}
    result = RunResult(run_dir, run_dir / "student", metrics, state.best_step, state.step, seconds)
    full = engine.exportable(mods.runner, mods.step)
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
                "parallel": engine.mode,
                "precision": precision.name,
            },
        }
        export_student(method.export_model(full[0]), parts.tokenizer, run_dir, recipe, extras=full[1])
    logger.close()
    env.barrier()
    return result


def _move(model: nn.Module, device: torch.device) -> None:
    model.to(device)  # in place (nn.Module.to), whatever transformers' wrapper of it declares


def _workers(requested: int | None, env: DistEnv) -> int:
    """DataLoader workers: as asked, else none on CPUs (they would compete for the cores) and 2 on GPUs."""
    if requested is not None:
        return requested
    return 2 if env.device.type == "cuda" else 0
