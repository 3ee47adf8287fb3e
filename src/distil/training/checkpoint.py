"""Resumable checkpoints, written atomically, and the rules for reusing a run directory.

A checkpoint holds the student, the method's own modules and its non-trainable state, the optimiser, the
scheduler, the trainer state (step, epoch, position in the epoch, best metric) and every process's RNG
state. It is written to
a temporary folder and renamed into place, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.methods import Method
from distil.training.env import get_rng_state, set_rng_state

__all__ = [
    "TrainerState",
    "check_run_dir",
    "clear_run_dir",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FINISHED_MARKER = "student/recipe.json"
# Version of what a checkpoint folder holds. 2: method state in method_state.safetensors (not among the
# trained modules), per-stage methods. Older checkpoints cannot be resumed by this version.
CHECKPOINT_FORMAT = 2


@dataclass
class TrainerState:
    """Where training stands; restored verbatim on resume.

    Attributes:
        step: Optimiser steps taken.
        epoch: Current epoch (0-indexed).
        batch_in_epoch: Global batches of the current epoch already consumed.
        best_metric: Best value of the selection metric so far.
        best_step: Step at which ``best_metric`` was reached.
        best_eval: All metrics of the best evaluation.
        eval_step: Step of the latest evaluation.
        world_size: Processes that trained; a resume must use the same data split.
        format: ``CHECKPOINT_FORMAT`` of the code that wrote it.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    best_eval: dict[str, float] | None = None
    eval_step: int | None = None
    world_size: int = 1
    format: int = CHECKPOINT_FORMAT


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked; writes nothing.

    Raises:
        ConfigError: The folder holds a finished or unfinished run and neither ``resume`` nor
            ``overwrite`` says what to do with it, or ``resume`` finds nothing to resume.
    """
    if resume and overwrite:
        raise ConfigError("Choose one of --resume and --overwrite, not both.")
    finished = (run_dir / FINISHED_MARKER).exists()
    has_checkpoint = latest_checkpoint(run_dir) is not None
    if resume:
        if finished:
            raise ConfigError(
                f"{run_dir} holds a finished run; nothing to resume. Use --overwrite to redo it."
            )
        if not has_checkpoint:
            raise ConfigError(
                f"--resume: {run_dir} has no checkpoint to resume from. Drop --resume to start anew."
            )
        return
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        what = "a finished run" if finished else "an unfinished run"
        hint = "" if finished else " or --resume to continue it"
        raise ConfigError(
            f"Run directory {run_dir} already holds {what}. Pass --overwrite to replace it{hint}, "
            "or choose another run_dir."
        )


def clear_run_dir(run_dir: Path) -> None:
    """Remove a previous run (only after ``check_run_dir`` allowed it and the new run validated)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    student: nn.Module,
    extras: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    method_state: dict[str, torch.Tensor],
    *,
    keep: int,
    rank: int = 0,
    barrier: Any = None,
) -> Path:
    """Write a checkpoint atomically and prune old ones; every process calls it (for its RNG state)."""
    root = run_dir / "checkpoints"
    name = f"step-{state.step:08d}"
    tmp = root / f".tmp-{name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if barrier:
        barrier()
    torch.save(get_rng_state(), tmp / f"rng-{rank}.pt")
    if barrier:
        barrier()
    final = root / name
    if rank == 0:
        save_model(student, str(tmp / "student.safetensors"))
        if any(True for _ in extras.parameters()):
            save_model(extras, str(tmp / "method.safetensors"))
        if method_state:
            save_file(
                {k: v.contiguous() for k, v in method_state.items()}, str(tmp / "method_state.safetensors")
            )
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        # state.json last: its presence marks a complete checkpoint.
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(root / "latest", name)
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if barrier:
        barrier()
    return final


def load_checkpoint(
    path: Path,
    student: nn.Module,
    extras: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    method: Method,
    *,
    rank: int = 0,
) -> TrainerState:
    """Restore everything ``save_checkpoint`` wrote, including this process's RNG state.

    Raises:
        ConfigError: The checkpoint was written by an older distil whose format this one cannot resume.
    """
    saved = json.loads((path / "state.json").read_text())
    if saved.get("format", 1) != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path} was written by an older distil (checkpoint format {saved.get('format', 1)}, this "
            f"version reads {CHECKPOINT_FORMAT}); it cannot be resumed. Start the run anew with --overwrite "
            "(or another run_dir); finished runs and their exported students stay usable."
        )
    load_model(student, str(path / "student.safetensors"))
    if (path / "method.safetensors").exists():
        load_model(extras, str(path / "method.safetensors"))
    state_file = path / "method_state.safetensors"
    method.load_state_dict(load_file(str(state_file)) if state_file.exists() else {})
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{rank}.pt"
    if not rng_file.exists():
        raise ConfigError(
            f"{path} was written by fewer processes than this run has; resume with the same count."
        )
    set_rng_state(torch.load(rng_file, weights_only=False))
    return TrainerState(**saved)
