"""The parallel engines, one class per mode, and the registry ``engine.name`` picks from.

Adding an engine (DeepSpeed ZeRO-3, tensor parallelism) is one file here subclassing `Engine` (with its
``Options``, the dataclass of its ``engine:`` section) and one line in ``ENGINES``; the multi-process
invariants (``tests/integration/test_multiprocess.py``) run over every engine whose traits say
``multi_process``.
"""

from __future__ import annotations

from typing import Any

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
    "engine_options",
    "resolve_engine",
    "state_bytes",
    "traits_of",
]

ENGINES: dict[str, type[Engine]] = {cls.name: cls for cls in (SingleEngine, DDPEngine, FSDPEngine)}


def engine_class(name: str) -> type[Engine]:
    """The engine class of ``engine.name`` (``auto``: DDP, which is one process's engine over one).

    Raises:
        ConfigError: No engine has that name.
    """
    if name == "deepspeed":
        raise ConfigError(
            "engine.name=deepspeed is not available in this version of distil: use engine.name=fsdp "
            "(sharded student, teacher and optimizer state: ZeRO-3's equivalent; engine.cpu_offload=true "
            "offloads the shards on GPUs)."
        )
    key = "ddp" if name == "auto" else name
    if key not in ENGINES:
        raise ConfigError(f"engine.name={name} names no engine; choose auto, {', '.join(ENGINES)}.")
    return ENGINES[key]


def engine_options(options: Any) -> Any:
    """A run config's ``engine`` section; ``None`` (built in code without one) is ``auto``'s defaults."""
    return ENGINES["ddp"].Options() if options is None else options


def traits_of(options: Any) -> EngineTraits:
    """What the engine a run config asks for can do, before processes exist (``auto``: DDP's)."""
    return engine_class(engine_options(options).name).traits


def resolve_engine(options: Any, world: int) -> str:
    """The engine that runs: ``auto`` is DDP with several processes; DDP over one process is ``none``."""
    name = engine_options(options).name
    if name in ("auto", "ddp"):
        return "ddp" if world > 1 else "none"
    return str(name)


def build_engine(options: Any, env: DistEnv, precision: Precision) -> Engine:
    """The engine of a run config's ``engine`` section for these processes.

    Raises:
        ConfigError: An option this machine cannot honour (CPU offload without GPUs).
    """
    options = engine_options(options)
    name = resolve_engine(options, env.world)
    cls = ENGINES[name]
    return cls(env, precision, options if isinstance(options, cls.Options) else cls.Options())
