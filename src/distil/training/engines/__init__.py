"""The parallel engines, one class per mode, and the registry ``train.parallel`` picks from.

Adding an engine (DeepSpeed ZeRO-3, tensor parallelism) is one file here subclassing `Engine`, one line in
``ENGINES`` and its name in ``train.parallel``; the multi-process invariants
(``tests/integration/test_multiprocess.py``) run over every engine whose traits say ``multi_process``.
"""

from __future__ import annotations

import torch

from distil.errors import ConfigError
from distil.training.dist import DistEnv
from distil.training.engines.base import Engine, StepModule, state_bytes
from distil.training.engines.ddp import DDPEngine
from distil.training.engines.fsdp import FSDPEngine
from distil.training.engines.single import SingleEngine
from distil.training.precision import Precision
from distil.types import EngineTraits

__all__ = [
    "ENGINES",
    "Engine",
    "StepModule",
    "build_engine",
    "engine_class",
    "resolve_parallel",
    "state_bytes",
    "traits_of",
]

ENGINES: dict[str, type[Engine]] = {cls.name: cls for cls in (SingleEngine, DDPEngine, FSDPEngine)}


def engine_class(parallel: str) -> type[Engine]:
    """The engine class of ``train.parallel`` (``auto``: DDP, which is one process's engine over one).

    Raises:
        ConfigError: No engine has that name.
    """
    name = "ddp" if parallel == "auto" else parallel
    if name not in ENGINES:
        raise ConfigError(f"train.parallel={parallel} names no engine; choose auto, {', '.join(ENGINES)}.")
    return ENGINES[name]


def traits_of(parallel: str) -> EngineTraits:
    """What the engine ``train.parallel`` asks for can do, before processes exist (``auto``: DDP's)."""
    return engine_class(parallel).traits


def resolve_parallel(parallel: str, world: int, device: torch.device, *, cpu_offload: bool) -> str:
    """``auto`` -> ``ddp`` with several processes, else ``none``; DDP over one process is ``none`` too.

    Raises:
        ConfigError: CPU offload on a machine without GPUs (there is nothing to offload from).
    """
    if cpu_offload and device.type != "cuda":
        raise ConfigError("train.cpu_offload offloads FSDP shards from GPUs; this machine has none.")
    if parallel in ("auto", "ddp") and world == 1:
        return "none"
    return "ddp" if parallel == "auto" else parallel


def build_engine(parallel: str, env: DistEnv, precision: Precision, *, cpu_offload: bool) -> Engine:
    """The engine of a resolved ``parallel`` mode (`resolve_parallel`) for these processes."""
    return ENGINES[parallel](env, precision, cpu_offload=cpu_offload)
