"""A run before its first step: every check, the task, models and method, then the engine's wrapping.

`prepare` checks everything and builds the parts without writing anything; `start` clears and prepares the
run directory; `assemble` wraps the student and the method's modules on the engine (DDP or FSDP2), shards
the teacher and builds the optimizer. The loop (`distil.training.loop.train`) calls the three in order;
benchmarks call them to time or measure exactly the modules a run trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.files import atomic_write_text, check_writable, remove_leftovers
from distil.models.families import get_layers
from distil.run_config import RunConfig
from distil.training.checkpoint import (
    FINISHED_MARKER,
    check_run_dir,
    checkpoint_state,
    clear_run_dir,
    find_checkpoints,
    latest_checkpoint,
)
from distil.training.checks import check_run
from distil.training.dist import DistEnv, check_launcher, check_shared_run_dir, init_distributed
from distil.training.engines import Engine, StepModule, build_engine
from distil.training.optim import build_optimizer, cut_optimizer_state, trainable_parameters
from distil.training.precision import Precision, precision_policy
from distil.training.resume import check_same_run, read_resumes
from distil.training.rng import seed_everything
from distil.training.setup import RunParts, build_run
from distil.types import Resize

__all__ = ["Modules", "Prepared", "assemble", "prepare", "resize", "start", "write_config"]


@dataclass
class Prepared:
    """What `prepare` checked and built, before the first write."""

    env: DistEnv
    engine: Engine
    precision: Precision
    parts: RunParts
    clear: bool
    changes: dict[str, tuple[Any, Any]]  # what a resume changed of the saved config (safe keys only)
    checkpoint: Path | None  # the checkpoint a resume continues from
    skipped: list[str]  # newer checkpoints passed over, each with why


def prepare(cfg: RunConfig, resume: bool, overwrite: bool) -> Prepared:
    """Every check, then the task, the models and the method; nothing is written before this returns."""
    tc = cfg.train
    check_run(cfg)  # configs built in code (plans, the API) get the checks a YAML config gets
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    env = init_distributed(tc.dist_timeout_minutes)
    precision = precision_policy(tc.precision, cfg.models.teacher_dtype, env.device)
    engine = build_engine(cfg.engine, env, precision)
    check_launcher(
        engine.name, tc.precision, cpu_offload=engine.cpu_offload, checkpointing=tc.activation_checkpointing,
        compile=tc.compile,
    )  # fmt: skip
    run_dir = Path(cfg.run_dir)
    # --resume of a run killed before its first checkpoint starts it again: there is nothing to lose.
    restart = resume and run_dir.is_dir() and _never_saved(run_dir)
    resume = resume and not restart
    check_run_dir(run_dir, resume=resume, overwrite=overwrite or restart)
    changes: dict[str, tuple[Any, Any]] = {}
    checkpoint: Path | None = None
    skipped: list[str] = []
    if resume:
        read_resumes(run_dir)  # a damaged history is refused now, before config.yaml is rewritten
        changes = check_same_run(run_dir, cfg)
        checkpoint = latest_checkpoint(run_dir, skipped=skipped)
        if checkpoint is None:
            raise ConfigError(
                f"--resume: no intact checkpoint in {run_dir / 'checkpoints'} ({'; '.join(skipped)}). "
                "Start anew with --overwrite."
            )
        saved = checkpoint_state(checkpoint)
        global_batch = tc.batch_size * env.world * tc.grad_accum
        if saved.global_batch and saved.global_batch != global_batch:
            raise ConfigError(
                f"{checkpoint} trained with global batches of {saved.global_batch} examples, this run has "
                f"{global_batch} (train.batch_size x processes x train.grad_accum); keep the global batch "
                "(e.g. double train.grad_accum when halving the processes)."
            )
    if env.is_main:
        check_writable(run_dir, needed_bytes=0)
    check_shared_run_dir(env, run_dir)
    seed_everything(tc.seed)  # identical initialisation in every process
    meta = engine.rank0_loading and not env.is_main
    parts = build_run(cfg, precision=precision, meta=meta, prepare_order=env.main_first)
    if env.is_main:
        check_writable(run_dir, needed_bytes=_needed_bytes(parts, tc.keep_checkpoints))
        for note in parts.notes:
            print(f"[distil] {note}")
    # Whether the caches apply at all was checked with the config (`checks.teacher_cache_refusal`); how
    # large a top-k may be needs the teacher.
    if tc.cache_teacher_topk is not None and parts.teacher is not None:
        head = parts.teacher.get_output_embeddings()
        vocab = int(head.weight.shape[0]) if head is not None else int(parts.teacher.config.vocab_size)
        if tc.cache_teacher_topk > vocab:
            raise ConfigError(
                f"train.cache_teacher_topk={tc.cache_teacher_topk} is above the teacher's {vocab}-token "
                f"vocabulary: set it to at most {vocab} (the vocabulary size keeps the whole distribution)."
            )
    if tc.compile and parts.method.student_request().inner_layers:
        raise ConfigError(
            f"train.compile: method {cfg.method_name!r} captures the student's queries, keys and values or "
            "attention scores inside its blocks, which compiled blocks do not hand over; set "
            "train.compile=false."
        )
    return Prepared(env, engine, precision, parts, overwrite or restart, changes, checkpoint, skipped)


def _needed_bytes(parts: RunParts, keep: int) -> int:
    """Disk space a run needs: its checkpoints (weights and two AdamW moments each) and two exports."""
    params = sum(p.numel() for p in parts.student.parameters())
    params += sum(p.numel() for p in parts.method.trainable_modules().parameters())
    return params * (12 * (keep + 1) + 8)


def _never_saved(run_dir: Path) -> bool:
    """A run directory a killed run left before its first checkpoint (no checkpoint, not finished)."""
    return not (run_dir / FINISHED_MARKER).exists() and not find_checkpoints(run_dir)


def start(cfg: RunConfig, prep: Prepared) -> None:
    """Clear what `prepare` allowed to be replaced and write the run's config; every process calls it."""
    env, run_dir = prep.env, Path(cfg.run_dir)
    env.barrier()
    if env.is_main:
        if prep.clear:
            clear_run_dir(run_dir)
        for leftover in remove_leftovers(run_dir):
            print(f"[distil] removed {leftover}, left by an interrupted write")
        run_dir.mkdir(parents=True, exist_ok=True)
        if prep.checkpoint is None:  # a resume writes it once its checkpoint has loaded (`write_config`)
            write_config(cfg, run_dir)
    env.barrier()


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    """The run's config as training uses it, ``RUN_DIR/config.yaml`` (what a resume is compared with)."""
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


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
class Modules:
    """The assembled modules of a run."""

    step: StepModule
    wrapped: nn.Module
    teacher: Any
    params: list[nn.Parameter]
    optimizer: torch.optim.AdamW


def assemble(cfg: RunConfig, prep: Prepared) -> Modules:
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
    ram_efficient = engine.rank0_loading
    if ram_efficient:
        weights, buffers = _rank0_state(step, env)
    else:
        step.to(env.device)
    layers = len(get_layers(student))
    wrapped = engine.wrap(step, {i % layers for i in step.request.inner_layers})
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
    return Modules(step, wrapped, teacher, [p for _, p in named], optimizer)


def resize(mods: Modules, engine: Engine, change: Resize) -> None:
    """After a method narrowed parameters in place: its optimizer state cut alike, the student re-wrapped."""
    cut_optimizer_state(mods.optimizer, change)
    engine.rewrap(mods)


def _move(model: nn.Module, device: torch.device) -> None:
    model.to(device)  # in place (nn.Module.to), whatever transformers' wrapper of it declares
