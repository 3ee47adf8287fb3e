"""Resumable checkpoints, written by every process, verified on resume; the rules for reusing a run directory.

A checkpoint (``RUN_DIR/checkpoints/step-<N>``) holds:

- ``weights/``: the student, the method's trainable modules and the optimizer's tensors, keyed by
  parameter name, through ``torch.distributed.checkpoint`` with safetensors files (each process writes its
  own shards under FSDP; one copy of replicated tensors otherwise). Any number of processes, sharded or
  not, can load it: resuming 2 processes in 1 (or 1 in 2) re-shards.
- ``optimizer.json`` (its hyper-parameters), ``scheduler.json``, ``scaler.json`` (fp16), ``state.json``
  (step, epoch, position in the epoch, best metric, global batch, format), ``method_state.safetensors``
  (a method's non-trainable state), and each process's random state (``rng-<rank>.*``).
- ``manifest.json``, written last: every file's size and the SHA-256 of the small ones. A checkpoint
  without a manifest, or whose files no longer match it, is incomplete or damaged; resume skips it, says
  why, and falls back to the newest intact one.

Everything is written to a temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint under a checkpoint's name. Nothing here is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint import (
    DefaultLoadPlanner,
    HuggingFaceStorageReader,
    HuggingFaceStorageWriter,
)
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import _init_optim_state, get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from distil.errors import ConfigError, DataError
from distil.files import atomic_write_text
from distil.training.dist import DistEnv
from distil.training.rng import load_rng_state, process_seed, save_rng_state, seed_everything

__all__ = [
    "CHECKPOINT_FORMAT",
    "FINISHED_MARKER",
    "TrainerState",
    "check_run_dir",
    "checkpoint_state",
    "checkpoint_tensors",
    "clear_run_dir",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "method_state",
    "save_checkpoint",
    "verify_checkpoint",
]

FINISHED_MARKER = "student/recipe.json"
# What a checkpoint folder holds. 3: sharded weights (torch.distributed.checkpoint, safetensors),
# JSON optimizer/scheduler/random state, a manifest. Older checkpoints cannot be resumed by this version.
CHECKPOINT_FORMAT = 3
_HASHED = 64 * 2**20  # files up to this size get a SHA-256 in the manifest; larger ones their size


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
        world_size: Processes that trained.
        global_batch: Examples per step; a resume must keep it (the data position counts global batches).
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
    global_batch: int = 0
    format: int = CHECKPOINT_FORMAT


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked; writes nothing.

    Raises:
        ConfigError: The folder holds a finished or unfinished run and neither ``resume`` nor
            ``overwrite`` says what to do with it, or ``resume`` finds a finished run or no folder.
    """
    if resume and overwrite:
        raise ConfigError("Choose one of --resume and --overwrite, not both.")
    finished = (run_dir / FINISHED_MARKER).exists()
    if resume:
        if not run_dir.is_dir():
            # A typo in --run-dir must not cost a whole new run.
            raise ConfigError(
                f"Run directory {run_dir} does not exist: nothing to resume. Check --run-dir (run_dir), or "
                "drop --resume to start a new run there."
            )
        if finished:
            raise ConfigError(
                f"{run_dir} holds a finished run; nothing to resume. Use --overwrite to redo it."
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


def find_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint folder of a run, newest first (complete or not; see `verify_checkpoint`)."""
    root = run_dir / "checkpoints"
    return sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True) if root.is_dir() else []


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            sha.update(block)
    return sha.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")


def _manifest(folder: Path) -> dict[str, Any]:
    entries = {}
    for path in _files(folder):
        size = path.stat().st_size
        entry: dict[str, Any] = {"size": size}
        if size <= _HASHED:
            entry["sha256"] = _digest(path)
        entries[str(path.relative_to(folder))] = entry
    return {"format": CHECKPOINT_FORMAT, "files": entries}


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed, or ``None`` when it is complete and intact."""
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        return "it has no manifest.json (its write did not finish, or it predates verified checkpoints)"
    try:
        manifest = json.loads(manifest_file.read_text())
        entries: dict[str, Any] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "its manifest.json is not readable"
    for name, entry in entries.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry["size"]:
            return f"{name} has {file.stat().st_size} bytes, {entry['size']} were written"
        if "sha256" in entry and _digest(file) != entry["sha256"]:
            return f"{name} does not match its checksum"
    if int(manifest.get("format", 0)) != CHECKPOINT_FORMAT:
        return (
            f"it was written by an older distil (checkpoint format {manifest.get('format')}, this version "
            f"reads {CHECKPOINT_FORMAT})"
        )
    return None


def latest_checkpoint(
    run_dir: Path, *, skipped: list[str] | None = None, before: str | None = None
) -> Path | None:
    """The newest complete, intact checkpoint of a run, or ``None``.

    Args:
        run_dir: The run.
        skipped: If given, receives ``"<checkpoint>: <why>"`` for each newer checkpoint passed over.
        before: Only checkpoints older than the one of this name (a resume falling back past one whose
            tensors did not load).
    """
    for path in find_checkpoints(run_dir):
        if before is not None and path.name >= before:
            continue
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        if skipped is not None:
            skipped.append(f"{path.name}: {problem}")
    return None


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence the warning that torch.distributed.checkpoint assumes one process: distil means that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _storage_key(t: torch.Tensor) -> tuple[int, int, tuple[int, ...]] | None:
    local = t.to_local() if isinstance(t, DTensor) else t
    if local.numel() == 0:
        return None
    return (local.untyped_storage().data_ptr(), int(local.storage_offset()), tuple(local.shape))


def _aliases(model_state: dict[str, Any]) -> dict[str, str]:
    """Tied weights (an LM head sharing the word embeddings): each later name -> the first name of its tensor.

    safetensors stores a tensor once; the aliases are saved under their first name and filled through it.
    """
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out = {}
    for name, value in model_state.items():
        key = _storage_key(value) if isinstance(value, torch.Tensor) else None
        if key is None:
            continue
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def _flat(optim_state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        f"optim.{fqn}.{key}": value
        for fqn, entry in optim_state["state"].items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor)
    }


def _groups_json(optim_state: dict[str, Any]) -> list[dict[str, Any]]:
    groups = []
    for group in optim_state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return groups


def save_checkpoint(
    env: DistEnv,
    run_dir: Path,
    state: TrainerState,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    method_state: dict[str, torch.Tensor],
    *,
    keep: int,
) -> Path:
    """Write a checkpoint atomically and prune old ones; every process calls it."""
    root = run_dir / "checkpoints"
    name = f"step-{state.step:08d}"
    tmp, final = root / f".tmp-{name}", root / name
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    env.barrier()
    model_state, raw_optim = get_state_dict(wrapped, optimizer)
    optim_state = cast(dict[str, Any], raw_optim)
    aliases = _aliases(model_state)
    tensors = {f"model.{k}": v for k, v in model_state.items() if k not in aliases} | _flat(optim_state)
    with _single_process_quiet():
        dcp.save(
            tensors,
            storage_writer=HuggingFaceStorageWriter(str(tmp / "weights"), save_distributed=env.world > 1),
        )
    save_rng_state(tmp, env.rank)
    env.barrier()
    if env.is_main:
        atomic_write_text(tmp / "optimizer.json", json.dumps(_groups_json(optim_state)))
        atomic_write_text(tmp / "scheduler.json", json.dumps(scheduler.state_dict()))
        if scaler is not None:
            atomic_write_text(tmp / "scaler.json", json.dumps(scaler.state_dict()))
        if method_state:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in method_state.items()},
                str(tmp / "method_state.safetensors"),
            )
        atomic_write_text(tmp / "state.json", json.dumps(asdict(state), indent=2))
        # The manifest last: its presence (and every file matching it) marks a complete checkpoint.
        atomic_write_text(tmp / "manifest.json", json.dumps(_manifest(tmp), indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(root / "latest", name)
        for old in find_checkpoints(run_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    env.barrier()
    return final


def checkpoint_tensors(path: Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The full (unsharded) tensors a checkpoint holds under ``prefix``, keyed without it; one process.

    For inspection and tools: ``prefix="model.student."`` gives the student's weights (tied aliases once),
    ``"model.extras."`` the method's modules, ``"optim."`` the optimizer's moments.
    """
    reader = HuggingFaceStorageReader(str(path / "weights"))
    meta = reader.read_metadata().state_dict_metadata
    tensors = {
        name: torch.empty(entry.size, dtype=entry.properties.dtype)
        for name, entry in meta.items()
        if name.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }
    with _single_process_quiet():
        dcp.load(tensors, storage_reader=reader, no_dist=True)
    return {name[len(prefix) :]: value for name, value in tensors.items()}


def _json(path: Path, kind: type) -> Any:
    """A JSON file of a checkpoint, checked to hold a ``kind``; errors name the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a JSON file distil wrote ({err}).") from err
    if not isinstance(value, kind):
        raise DataError(f"{path}: not what distil wrote (a JSON {kind.__name__} was expected).")
    return value


def checkpoint_state(path: Path) -> TrainerState:
    """The trainer state a checkpoint holds (``state.json``).

    Raises:
        DataError: The file is not a trainer state distil wrote.
    """
    return _checked_state(path)


def _checked_state(path: Path) -> TrainerState:
    try:
        return TrainerState(**_json(path / "state.json", dict))
    except TypeError as err:
        raise DataError(f"{path / 'state.json'}: not a trainer state distil wrote ({err}).") from err


def method_state(path: Path) -> dict[str, torch.Tensor]:
    """The method's non-trainable state a checkpoint holds (empty when it has none).

    Raises:
        DataError: The file is not a method state distil wrote.
    """
    state_file = path / "method_state.safetensors"
    try:
        return load_file(str(state_file)) if state_file.exists() else {}
    except (OSError, SafetensorError) as err:
        raise DataError(f"{state_file}: not a method state distil wrote ({err}).") from err


def load_checkpoint(
    env: DistEnv,
    path: Path,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    *,
    seed: int,
) -> TrainerState:
    """Restore what `save_checkpoint` wrote, re-sharding for this run's processes.

    All but the method's state, which the caller reads with `method_state` (before the weights: it may
    fix the student's shapes).

    A process for which the checkpoint holds no random state (it was written by fewer processes) starts
    the stream `distil.training.rng.process_seed` gives it at that step.
    """
    state = _checked_state(path)
    _init_optim_state(optimizer)  # the optimizer's tensors must exist to be loaded into
    model_state, raw_optim = get_state_dict(wrapped, optimizer)
    optim_state = cast(dict[str, Any], raw_optim)  # {"state": {name: {key: tensor}}, "param_groups": [...]}
    reader = HuggingFaceStorageReader(str(path / "weights"))
    try:
        saved = set(reader.read_metadata().state_dict_metadata)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise DataError(f"{path / 'weights'}: not weights distil wrote ({err}).") from err
    aliases = _aliases(model_state)
    missing = [k for k in model_state if f"model.{aliases.get(k, k)}" not in saved]
    if missing:
        raise ConfigError(
            f"{path} does not hold this run's model ({len(missing)} tensors missing, e.g. {missing[0]}): "
            "was it written for another student or method? Start anew with --overwrite."
        )
    # Parameters that never had a gradient have no optimizer state in the checkpoint; they keep the
    # zeros _init_optim_state gave them, which AdamW ignores as it ignores them.
    tensors = {
        k: v
        for k, v in ({f"model.{k}": v for k, v in model_state.items()} | _flat(optim_state)).items()
        if k in saved
    }
    try:
        with _single_process_quiet():
            dcp.load(tensors, storage_reader=reader, planner=DefaultLoadPlanner(allow_partial_load=True))
    except (OSError, ValueError, RuntimeError, SafetensorError, CheckpointException) as err:
        raise DataError(f"{path / 'weights'}: cannot be read ({err}).") from err
    model_state = {k: tensors[f"model.{aliases.get(k, k)}"] for k in model_state}
    for fqn, entry in optim_state["state"].items():
        for key in entry:
            entry[key] = tensors.get(f"optim.{fqn}.{key}", entry[key])
    saved_groups = _json(path / "optimizer.json", list)
    try:
        for group, saved_group in zip(optim_state["param_groups"], saved_groups, strict=True):
            items = saved_group.items()
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in items if k != "params"})
    except (AttributeError, ValueError, TypeError) as err:
        raise DataError(f"{path / 'optimizer.json'}: not optimizer settings distil wrote ({err}).") from err
    set_state_dict(wrapped, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    try:
        scheduler.load_state_dict(_json(path / "scheduler.json", dict))
        if scaler is not None and (path / "scaler.json").is_file():
            scaler.load_state_dict(_json(path / "scaler.json", dict))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: the scheduler or scaler state is not what distil wrote ({err}).") from err
    if not load_rng_state(path, env.rank):
        seed_everything(process_seed(seed, env.rank) + state.step)
    return state
