"""The processes of a run: the process group, this process's place in it, and what the launcher asked for.

``torchrun`` (or ``accelerate launch``, which starts the same processes) sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; the process group is created once per process (NCCL on GPUs,
gloo on CPUs) and reused by every run of a plan. Collectives here carry metrics, evaluation outputs and
small objects; gradients and parameters are reduced by DDP / FSDP (`distil.training.engines`).
"""

from __future__ import annotations

import atexit
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from distil.errors import ConfigError

__all__ = ["DistEnv", "check_launcher", "check_shared_run_dir", "init_distributed"]

_TRUE = {"1", "true", "yes"}


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the run's processes.

    Attributes:
        world: Processes in the run.
        rank: This process's index, 0 to ``world - 1``.
        local_rank: Its index on this node (its GPU).
        local_world: Processes on this node.
        device: The device it trains on.
    """

    world: int
    rank: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Process 0 writes the run's shared files."""
        return self.rank == 0

    @property
    def nodes(self) -> int:
        """Machines the processes run on."""
        return max(1, -(-self.world // max(self.local_world, 1)))

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world > 1:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of ``values`` over processes (a new tensor)."""
        out = values.clone()
        if self.world > 1:
            dist.all_reduce(out)
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process (small, picklable objects)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run a block on process 0 before the others (e.g. filling a cache the others then read)."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def init_distributed(timeout_minutes: int = 60) -> DistEnv:
    """This process's ``DistEnv``; creates the process group once when several processes run.

    Raises:
        ConfigError: The launcher's variables are inconsistent (a rank outside the world).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}; launch with torchrun.")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
        atexit.register(_destroy)
    return DistEnv(world=world, rank=rank, local_rank=local_rank, local_world=local_world, device=device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_launcher(
    parallel: str, precision: str, *, cpu_offload: bool, checkpointing: bool, compile: bool
) -> None:
    """Refuse an ``accelerate launch`` configuration that asks for what the run config does not do.

    ``accelerate launch`` passes its config to the processes as environment variables; distil trains with
    its own engine, so a launcher setting it would ignore is an error naming both sides, never silence.

    Raises:
        ConfigError: FSDP, DeepSpeed, mixed precision, offload, activation checkpointing or a dynamo
            backend asked for by the launcher and not by the run config (or FSDP version 1).
    """
    env = os.environ
    asked = {
        "FSDP": env.get("ACCELERATE_USE_FSDP", "").lower() in _TRUE,
        "DeepSpeed": env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE,
    }
    for name, wanted in asked.items():
        key = "fsdp" if name == "FSDP" else "deepspeed"
        if wanted and parallel != key:
            raise ConfigError(
                f"accelerate launch asks for {name}, but engine.name={parallel}: set engine.name={key} "
                "(distil runs its own engine and would otherwise ignore the launcher's setting)."
            )
    if asked["FSDP"] and env.get("FSDP_VERSION", "2") != "2":
        raise ConfigError("accelerate launch asks for FSDP version 1; distil uses FSDP2 (fsdp_version: 2).")
    mixed = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed not in ("", "no") and not precision.startswith(mixed):
        raise ConfigError(
            f"accelerate launch asks for mixed precision {mixed}, but train.precision={precision}: set "
            f"train.precision={mixed}-mixed, or launch with --mixed_precision no."
        )
    flags = {
        "FSDP_OFFLOAD_PARAMS": ("engine.cpu_offload", cpu_offload),
        "FSDP_ACTIVATION_CHECKPOINTING": ("train.activation_checkpointing", checkpointing),
    }
    for var, (field, value) in flags.items():
        if env.get(var, "").lower() in _TRUE and not value:
            raise ConfigError(f"accelerate launch sets {var}, but {field}=false: set {field}=true.")
    backend = env.get("ACCELERATE_DYNAMO_BACKEND", "no").lower()
    if backend not in ("", "no") and not compile:
        raise ConfigError(
            f"accelerate launch asks for dynamo backend {backend}, but train.compile=false: set "
            "train.compile=true, or launch with --dynamo_backend no."
        )


def check_shared_run_dir(env: DistEnv, run_dir: Path) -> None:
    """Refuse a run of several machines whose run directory is not one folder they all see.

    Checkpoints are written by every process and read back by all of them on resume, and the exported
    student by process 0; a node-local run directory works on one machine, but across machines it would
    fail at the first checkpoint. Process 0 writes a probe file next to the run directory and every
    process looks for it.

    Raises:
        ConfigError: Some process does not see process 0's probe file.
    """
    if env.nodes == 1:
        return
    folder = run_dir.parent if not run_dir.exists() else run_dir
    folder = next(p for p in (folder, *folder.parents) if p.exists())
    token = env.broadcast_object(secrets.token_hex(8) if env.is_main else None)
    probe = folder / f".distil-shared-{token}"
    if env.is_main:
        probe.write_text(token)
    env.barrier()
    seen = probe.is_file() and probe.read_text() == token
    everyone = env.all_reduce_sum(torch.tensor([0 if seen else 1], device=env.device))
    env.barrier()
    if env.is_main:
        probe.unlink(missing_ok=True)
    if int(everyone.item()) > 0:
        raise ConfigError(
            f"run_dir {run_dir} is not on a filesystem every machine shares ({int(everyone.item())} of "
            f"{env.world} processes do not see it): checkpoints are written by every process and read by "
            "all of them. Put run_dir on a shared filesystem (NFS, Lustre, a mounted bucket)."
        )
