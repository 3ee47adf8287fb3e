"""What every engine shares: the step module whose forward is the loss, and the `Engine` base class.

An engine owns everything that depends on how the student is spread over processes: wrapping it, sharding
the teacher, the backward pass and the optimizer step (clipping and loss scaling included), the student's
unsharded views for evaluation and export, and re-wrapping after a resize. It declares what it can do as
`EngineTraits`; checks and methods ask the traits, never the engine's name. One engine is one file of this
package and one line of ``ENGINES`` (`distil.training.engines`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from distil.adapters import forward_features
from distil.errors import ConfigError
from distil.methods import Method
from distil.run_config import TrainConfig
from distil.training.dist import DistEnv
from distil.training.optim import optimizer_step
from distil.training.precision import Precision
from distil.types import Batch, EngineTraits, FeatureRequest, Features

T = TypeVar("T")

__all__ = ["Engine", "SingleOptions", "StepModule", "Wrapped", "state_bytes"]


def state_bytes(tensors: Iterable[Tensor]) -> dict[str, int]:
    """Bytes of ``tensors`` this process holds (``local``) and of the whole tensors (``full``).

    A sharded tensor (FSDP's DTensor) counts its local shard; a plain tensor counts whole in both.
    """
    local = full = 0
    for t in tensors:
        size = t.element_size()
        full += t.numel() * size
        local += (t.to_local() if isinstance(t, DTensor) else t).numel() * size
    return {"local": local, "full": full}


class StepModule(nn.Module):
    """The student and the method's trainable modules as one module, whose forward is the loss.

    The loss of a micro-batch is computed inside this forward, so a data-parallel wrapper sees every
    parameter that feeds it and a sharded root gathers the method's modules with the student's.

    Args:
        student: The model being trained.
        extras: The method's trainable modules (projections, filters).
        method: The method (not a module: its state is not trained).
        request: The features the method needs from the student.
    """

    def __init__(
        self, student: PreTrainedModel, extras: nn.ModuleDict, method: Method, request: FeatureRequest
    ) -> None:
        super().__init__()
        self.student = student
        self.extras = extras
        self._method = method
        self.request = request

    def forward(
        self, batch: Batch | None, teacher: Features | None, inside: Callable[[], Any] | None = None
    ) -> Any:
        """The method's loss of one micro-batch: ``(total, parts)``; or what ``inside()`` returns.

        ``inside`` runs a function of the student (generation) within this forward, so that a sharded
        root has initialised itself and gathered its parameters, as in a training forward.
        """
        if inside is not None:
            return inside()
        assert batch is not None
        features = forward_features(self.student, batch, self.request)
        out = self._method.loss(batch, features, teacher)
        return out.total, out.parts


class Wrapped(Protocol):
    """What `Engine.rewrap` replaces the wrapper of (`distil.training.assembly.Modules`)."""

    step: StepModule
    wrapped: nn.Module


@dataclass
class SingleOptions:
    """The ``engine:`` section of one process (no options).

    Attributes:
        name: ``none``.
    """

    name: Literal["none"] = "none"


class Engine:
    """How one run's modules are wrapped, stepped and read back; one subclass per parallel mode.

    The defaults here are one process's: subclasses override what their mode changes. Each subclass
    declares ``Options``, the dataclass of its ``engine:`` section (``engine.name`` selects it).

    Args:
        env: The processes.
        precision: The precision policy.
        options: The engine's section of the run config.
    """

    name: ClassVar[str]
    traits: ClassVar[EngineTraits]
    Options: ClassVar[type[Any]] = SingleOptions

    def __init__(self, env: DistEnv, precision: Precision, options: Any) -> None:
        self.env, self.precision, self.options = env, precision, options

    @property
    def rank0_loading(self) -> bool:
        """Only process 0 reads the checkpoints; the others build on the meta device and receive shards."""
        return False

    @property
    def cpu_offload(self) -> bool:
        """Parameters wait on the CPU between uses."""
        return False

    @classmethod
    def check_train(cls, options: Any, tc: TrainConfig) -> None:
        """Refuse training settings this engine cannot honour (run with the other config checks).

        Raises:
            ConfigError: float16 loss scaling on an engine whose gradients a ``GradScaler`` cannot unscale.
        """
        if tc.precision == "fp16-mixed" and not cls.traits.scales_fp16:
            raise ConfigError(
                f"train.precision=fp16-mixed with engine.name={cls.name} is not supported (sharded loss "
                "scaling): use train.precision=bf16-mixed."
            )

    def wrap(self, step: StepModule, hooked_layers: Collection[int] = ()) -> nn.Module:
        """The module whose forward runs a micro-batch (here the step module itself).

        Args:
            step: The student and the method's modules.
            hooked_layers: Student layers (0-indexed) whose inner tensors a method captures with hooks.
        """
        return step

    def rewrap(self, mods: Wrapped) -> None:
        """Wrap ``mods.step`` again after a method changed its parameters' shapes (nothing to do here)."""

    @torch.no_grad()
    def cut_parameter(self, param: nn.Parameter, axis: int, index: Tensor) -> None:
        """Keep the entries ``index`` of ``param`` along ``axis``; the parameter object stays (`Runtime`)."""
        param.data = param.data.index_select(axis, index.to(param.device))

    def shard_teacher(self, teacher: PreTrainedModel) -> PreTrainedModel:
        """The frozen teacher as this engine holds it (here unchanged)."""
        return teacher

    @contextmanager
    def accumulating(self, wrapped: nn.Module, sync: bool) -> Iterator[None]:
        """Around one micro-batch: reduce gradients only after the last micro-batch of a step."""
        yield

    def autocast(self) -> Any:
        """Mixed-precision compute of the student's forward and loss, unless the engine casts itself."""
        return self.precision.autocast(self.env.device, cast=not self.traits.owns_precision)

    def backward(self, loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
        """Backpropagate one micro-batch's (share-weighted) loss, scaled for float16."""
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        params: list[nn.Parameter],
        *,
        max_grad_norm: float,
        scaler: torch.amp.GradScaler | None,
    ) -> bool:
        """Clip, step the optimizer and (when it really stepped) the schedule; returns whether it stepped."""
        return optimizer_step(optimizer, scheduler, params, max_grad_norm=max_grad_norm, scaler=scaler)

    @contextmanager
    def unsharded(self, wrapped: nn.Module) -> Iterator[None]:
        """The student's parameters whole, to call its forward outside a training step (evaluation)."""
        yield

    def call_student(self, wrapped: nn.Module, fn: Callable[[], T]) -> T:
        """Run ``fn``, which calls the student's own forward (generation), outside the loss; no gradients.

        Every process must call it alike (a sharded engine's forward passes are collective). It runs
        under the training step's autocast, so generation computes in the step's precision.
        """
        with torch.no_grad(), self.autocast(), self.unsharded(wrapped):
            return fn()

    def fused_optimizer(self) -> bool:
        """Fused AdamW where the device has the kernel (CUDA)."""
        return self.env.device.type == "cuda"

    def exportable(
        self, wrapped: nn.Module, step: StepModule
    ) -> tuple[PreTrainedModel, dict[str, Tensor]] | None:
        """The full student and the state of the method's modules on process 0 (``None`` elsewhere).

        Every process must call it.
        """
        return (step.student, dict(step.extras.state_dict())) if self.env.is_main else None
