"""The distributed engine: the student (and the method's modules) on DDP or FSDP2, the teacher sharded too.

``parallel``:

- ``none``: one process, the modules as they are.
- ``ddp``: `StepModule` (student + the method's trainable modules, whose forward computes the loss) wrapped
  by ``DistributedDataParallel``: gradients are bucketed and all-reduced while the backward pass runs.
  ``static_graph`` is on: the parameters a method leaves without a gradient (MiniLMv2's last FFN, a task
  head no loss reads) are found in the first step, so they neither deadlock nor get a zero gradient
  (AdamW then skips them, as in one process), without ``find_unused_parameters``'s search of the graph
  at every step. Every method uses the same parameters at every step; HomoDistil's prune events, which
  change them, wrap the step module again (`Engine.rewrap`).
- ``fsdp``: FSDP2 (``fully_shard``) on every transformer block of the student and at the root
  (`StepModule`: embeddings, head, the method's modules), and the same on the frozen teacher, which has
  no optimizer state. Parameters are stored sharded; each block gathers its parameters for its forward
  and backward and frees them after. Mixed precision is FSDP's policy (low-precision compute and
  all-gathers, float32 gradient reduction).

The loss of a micro-batch is computed inside the wrapped module's forward, so DDP sees every parameter
that feeds it and FSDP's root gathers the method's modules with the student's.
"""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel

from distil.adapters import forward_features
from distil.errors import ConfigError, TrainingError
from distil.methods import Method
from distil.models.families import get_layers
from distil.training.dist import DistEnv
from distil.training.precision import Precision
from distil.types import Batch, FeatureRequest, Features

__all__ = ["Engine", "StepModule", "resolve_parallel", "state_bytes"]


def resolve_parallel(parallel: str, world: int, device: torch.device, *, cpu_offload: bool) -> str:
    """``auto`` -> ``ddp`` with several processes, else ``none``; refuse what this machine cannot run.

    Raises:
        ConfigError: CPU offload on a machine without GPUs (there is nothing to offload from).
    """
    if cpu_offload and device.type != "cuda":
        raise ConfigError("train.cpu_offload offloads FSDP shards from GPUs; this machine has none.")
    if parallel == "auto":
        return "ddp" if world > 1 else "none"
    return parallel


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


def _reshard_after_forward(module: nn.Module, _args: Any, _output: Any) -> None:
    assert isinstance(module, FSDPModule)
    module.reshard()


class StepModule(nn.Module):
    """The student and the method's trainable modules as one module, whose forward is the loss.

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

    def forward(self, batch: Batch, teacher: Features | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss of one micro-batch: ``(total, parts)``."""
        features = forward_features(self.student, batch, self.request)
        out = self._method.loss(batch, features, teacher)
        return out.total, out.parts


class Wrapped(Protocol):
    """What `Engine.rewrap` replaces the wrapper of (`distil.training.assembly.Modules`)."""

    step: StepModule
    runner: nn.Module


class Engine:
    """How one run's modules are wrapped, stepped and read back, for ``parallel`` none, ddp or fsdp.

    Args:
        env: The processes.
        precision: The precision policy.
        parallel: The resolved mode (`resolve_parallel`).
        cpu_offload: FSDP: offload parameters to the CPU.
    """

    def __init__(
        self, env: DistEnv, precision: Precision, parallel: str, *, cpu_offload: bool = False
    ) -> None:
        if parallel == "ddp" and env.world == 1:
            parallel = "none"  # DDP over one process is the plain module
        self.env, self.precision, self.mode, self.cpu_offload = env, precision, parallel, cpu_offload

    @property
    def sharded(self) -> bool:
        """FSDP holds parameters as shards (DTensors)."""
        return self.mode == "fsdp"

    def _fsdp_kwargs(self, param_dtype: torch.dtype | None) -> dict[str, Any]:
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        kwargs: dict[str, Any] = {"mp_policy": mp}
        if self.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        return kwargs

    def wrap(self, step: StepModule, hooked_layers: Collection[int] = ()) -> nn.Module:
        """The module whose forward runs a micro-batch: the step module itself, or its DDP / FSDP form.

        Args:
            step: The student and the method's modules.
            hooked_layers: Student layers (0-indexed) whose inner tensors a method captures with hooks
                (MiniLMv2's queries, keys and values). FSDP gathers a block's parameters for its backward
                when gradients reach the block's outputs; gradients entering through a captured inner
                tensor would find them freed, so these blocks keep their parameters gathered from their
                forward to their backward.
        """
        if self.mode == "none":
            return step
        if self.mode == "ddp":
            ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            # static_graph: the set of parameters a method leaves without a gradient is found once, in the
            # first step, and reused; find_unused_parameters would search the graph every step (and warn
            # on every KD run, which leaves none).
            return DistributedDataParallel(step, device_ids=ids, static_graph=True)
        compute = self.precision.compute_dtype if self.precision.mixed else None
        for i, block in enumerate(get_layers(step.student)):
            fully_shard(block, reshard_after_forward=i not in hooked_layers, **self._fsdp_kwargs(compute))
        fully_shard(step, **self._fsdp_kwargs(compute))
        return step

    def rewrap(self, mods: Wrapped) -> None:
        """Wrap ``mods.step`` again after a method changed its parameters' shapes (`Method.on_step_end`).

        DDP sizes its gradient buckets to the parameters when it wraps, and its reducer holds each
        parameter's gradient accumulator, which knows the old shape (a new wrapper, or the next backward,
        would reuse it). So the old wrapper is released first, its hooks removed and the object freed, and
        the module is wrapped anew (which also checks that every process holds the same shapes).

        Args:
            mods: The run's modules (`distil.training.assembly.Modules`); ``runner`` is replaced.

        Raises:
            TrainingError: Under FSDP, whose shards are cut when it wraps (methods that resize refuse it),
                or when the old DDP wrapper outlives its release.
        """
        if self.mode == "fsdp":
            raise TrainingError(
                "A method changed the student's shapes under FSDP, whose shards cannot follow."
            )
        if self.mode != "ddp":
            return
        old = mods.runner
        assert isinstance(old, DistributedDataParallel)
        old.reducer._remove_autograd_hooks()
        released = weakref.ref(old)
        mods.runner = mods.step
        del old
        gc.collect()  # DDP's wrapper sits in reference cycles
        if released() is not None:
            raise TrainingError("The DDP wrapper of the student is still referenced; cannot re-wrap it.")
        mods.runner = self.wrap(mods.step)

    def shard_teacher(self, teacher: PreTrainedModel) -> PreTrainedModel:
        """Shard the frozen teacher like the student under FSDP (no optimizer state); else unchanged."""
        if self.mode != "fsdp":
            return teacher
        for block in get_layers(teacher):
            fully_shard(block, **self._fsdp_kwargs(None))
        fully_shard(teacher, **self._fsdp_kwargs(None))
        # FSDP keeps a root's parameters gathered after its forward, for the backward that follows; the
        # teacher has none, so its embeddings and head (the largest tensors of a big-vocabulary model)
        # would stay whole in every process. Free them after each forward.
        teacher.register_forward_hook(_reshard_after_forward)
        return teacher

    @contextmanager
    def accumulating(self, runner: nn.Module, sync: bool) -> Iterator[None]:
        """Around one micro-batch: reduce gradients only after the last micro-batch of a step."""
        if self.mode == "ddp" and not sync:
            assert isinstance(runner, DistributedDataParallel)
            with runner.no_sync():
                yield
            return
        if self.mode == "fsdp":
            assert isinstance(runner, FSDPModule)
            runner.set_requires_gradient_sync(sync)
        yield

    def autocast(self) -> Any:
        """Mixed-precision compute of the student's forward and loss (FSDP does its own casting)."""
        return self.precision.autocast(self.env.device, sharded=self.sharded)

    @contextmanager
    def unsharded(self, runner: nn.Module) -> Iterator[None]:
        """The student's root parameters gathered, to call its forward outside a training step (evaluation).

        Under FSDP the blocks gather their own parameters in their forward; the root's (embeddings,
        head) are gathered here. Every process must run the same forward passes meanwhile.
        """
        if self.mode != "fsdp":
            yield
            return
        assert isinstance(runner, FSDPModule)
        runner.unshard()
        try:
            yield
        finally:
            runner.reshard()

    def fused_optimizer(self) -> bool:
        """Fused AdamW where the device has the kernel (CUDA)."""
        return self.env.device.type == "cuda"

    def gather_full_state(self, runner: nn.Module) -> dict[str, Any]:
        """The unsharded state of the step module, on the CPU of process 0 (empty on the others).

        Every process must call it under FSDP (it all-gathers the shards).
        """
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        if self.mode == "none":
            return {k: v.detach().cpu() for k, v in runner.state_dict().items()}
        return get_model_state_dict(runner, options=options)

    def exportable(
        self, runner: nn.Module, step: StepModule
    ) -> tuple[PreTrainedModel, dict[str, Tensor]] | None:
        """The full student and the state of the method's modules on process 0 (``None`` elsewhere).

        Without sharding these are the live student and its modules' state; under FSDP a CPU copy of the
        student is filled from the gathered shards (built on the meta device, so no random initialisation
        is paid for). Every process must call it.
        """
        if not self.sharded:
            return (step.student, dict(step.extras.state_dict())) if self.env.is_main else None
        state = self.gather_full_state(runner)
        if not self.env.is_main:
            return None
        model_class: Any = type(step.student)  # transformers' decorated __init__ is opaque to type checkers
        with torch.device("meta"):
            student: PreTrainedModel = model_class(copy.deepcopy(step.student.config))
        weights = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
        student.load_state_dict(weights, assign=True, strict=False)
        live = dict(step.student.named_buffers())
        for name, buffer in list(student.named_buffers()):
            if buffer.is_meta:  # non-persistent buffers (position ids) are not in a state dict
                module_name, _, attr = name.rpartition(".")
                student.get_submodule(module_name).register_buffer(
                    attr, live[name].detach().cpu().clone(), persistent=False
                )
        student.tie_weights()
        missing = [n for n, p in student.named_parameters() if p.is_meta]
        if missing:
            raise RuntimeError(f"The gathered student state lacks {missing[:3]}; cannot export it.")
        extras = {k.removeprefix("extras."): v for k, v in state.items() if k.startswith("extras.")}
        return student.eval(), extras
