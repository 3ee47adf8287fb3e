"""FSDP2: student and teacher sharded per transformer block and at the root; FSDP casts to the compute dtype.

Parameters are stored sharded (DTensors); each block gathers its parameters for its forward and backward
and frees them after. The frozen teacher is sharded the same way and has no optimizer state. Mixed
precision is FSDP's policy (low-precision compute and all-gathers, float32 gradient reduction).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from transformers import PreTrainedModel

from distil.errors import ConfigError, TrainingError
from distil.models.families import get_layers
from distil.training.dist import DistEnv
from distil.training.engines.base import Engine, StepModule, T, Wrapped
from distil.training.precision import Precision
from distil.types import EngineTraits

__all__ = ["FSDPEngine", "FSDPOptions"]


@dataclass
class FSDPOptions:
    """The ``engine:`` section of FSDP2.

    Attributes:
        name: ``fsdp``.
        cpu_offload: Keep parameters (and optimizer state) on the CPU between uses (GPUs only).
        ram_efficient_loading: Only process 0 loads the checkpoints into host memory; the others build
            the models on the meta device and receive their shards from it.
    """

    name: Literal["fsdp"] = "fsdp"
    cpu_offload: bool = False
    ram_efficient_loading: bool = False


def _param_records(root: nn.Module) -> dict[int, Any]:
    """FSDP2's record of each sharded parameter below ``root``, by the parameter's ``id``."""
    records: dict[int, Any] = {}
    for module in root.modules():
        if isinstance(module, FSDPModule):
            group = module._get_fsdp_state()._fsdp_param_group
            for record in group.fsdp_params if group is not None else ():
                records[id(record.sharded_param)] = record
    return records


def _reshard_after_forward(module: nn.Module, _args: Any, _output: Any) -> None:
    assert isinstance(module, FSDPModule)
    module.reshard()


class FSDPEngine(Engine):
    """``engine.name=fsdp``: ``fully_shard`` on every block of student and teacher, and at their roots."""

    name = "fsdp"
    # A GradScaler cannot unscale gradients split across processes.
    traits = EngineTraits(
        sharded=True,
        owns_precision=True,
        offloads=True,
        scales_fp16=False,
        multi_process=True,
    )
    Options = FSDPOptions
    options: FSDPOptions

    def __init__(self, env: DistEnv, precision: Precision, options: FSDPOptions) -> None:
        if options.cpu_offload and env.device.type != "cuda":
            raise ConfigError("engine.cpu_offload offloads FSDP shards from GPUs; this machine has none.")
        super().__init__(env, precision, options)

    @property
    def cpu_offload(self) -> bool:
        """``engine.cpu_offload``: parameters (and optimizer state) wait on the CPU between uses."""
        return self.options.cpu_offload

    @property
    def rank0_loading(self) -> bool:
        """``engine.ram_efficient_loading``: only process 0 reads the checkpoints."""
        return self.options.ram_efficient_loading

    def _fsdp_kwargs(self, param_dtype: torch.dtype | None) -> dict[str, Any]:
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        kwargs: dict[str, Any] = {"mp_policy": mp}
        if self.options.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        return kwargs

    def wrap(self, step: StepModule, hooked_layers: Collection[int] = ()) -> nn.Module:
        """Shard every student block and the root (`StepModule`: embeddings, head, the method's modules).

        Args:
            step: The student and the method's modules.
            hooked_layers: Student layers (0-indexed) whose inner tensors a method captures with hooks
                (MiniLMv2's queries, keys and values). FSDP gathers a block's parameters for its backward
                when gradients reach the block's outputs; gradients entering through a captured inner
                tensor would find them freed, so these blocks keep their parameters gathered from their
                forward to their backward.
        """
        compute = self.precision.compute_dtype if self.precision.mixed else None
        for i, block in enumerate(get_layers(step.student)):
            fully_shard(block, reshard_after_forward=i not in hooked_layers, **self._fsdp_kwargs(compute))
        fully_shard(step, **self._fsdp_kwargs(compute))
        self._records = _param_records(step)
        return step

    def rewrap(self, mods: Wrapped) -> None:
        """Nothing to do: `cut_parameter` has sharded every cut parameter again in place."""

    @torch.no_grad()
    def cut_parameter(self, param: nn.Parameter, axis: int, index: Tensor) -> None:
        """Gather ``param``, keep ``index`` along ``axis``, and shard the result again under the same object.

        FSDP2 cuts a parameter into shards when it wraps a module and keeps the cut (sizes, padding, the
        all-gather buffers) in its per-parameter record. There is no public way to change a wrapped
        parameter's shape, so this re-runs that record's own sharding on the cut tensor and swaps the new
        sharded parameter's contents into the old object (``torch.utils.swap_tensors``), so the optimizer
        state, hooks and every reference keep pointing at it. The gathered buffers are dropped and
        re-allocated at the next all-gather. Every process must call it in the same order (it gathers).

        Raises:
            TrainingError: ``param`` is not a parameter FSDP manages.
        """
        record = getattr(self, "_records", {}).get(id(param))
        if record is None or record.sharded_param is not param:
            raise TrainingError("A parameter to cut is not sharded by FSDP; cannot cut it.")
        full = param.full_tensor().index_select(axis, index.to(param.device)).contiguous()
        fresh = nn.Parameter(full, requires_grad=param.requires_grad)
        record._init_sharded_param(fresh, full.device, None, record.mesh_info)
        new = record.sharded_param
        torch.utils.swap_tensors(param, new)
        record.sharded_param = param
        record._setattr_on_modules(param)
        record.init_dtype_attrs(record.mp_policy)
        record._init_extensions()
        record.all_gather_outputs = []
        if hasattr(record, "_unsharded_param"):
            del record._unsharded_param

    def shard_teacher(self, teacher: PreTrainedModel) -> PreTrainedModel:
        """Shard the frozen teacher like the student (no optimizer state)."""
        for block in get_layers(teacher):
            fully_shard(block, **self._fsdp_kwargs(None))
        fully_shard(teacher, **self._fsdp_kwargs(None))
        # FSDP keeps a root's parameters gathered after its forward, for the backward that follows; the
        # teacher has none, so its embeddings and head (the largest tensors of a big-vocabulary model)
        # would stay whole in every process. Free them after each forward.
        teacher.register_forward_hook(_reshard_after_forward)
        return teacher

    @contextmanager
    def accumulating(self, wrapped: nn.Module, sync: bool) -> Iterator[None]:
        """Reduce-scatter gradients only in the backward of a step's last micro-batch."""
        assert isinstance(wrapped, FSDPModule)
        wrapped.set_requires_gradient_sync(sync)
        yield

    @contextmanager
    def unsharded(self, wrapped: nn.Module) -> Iterator[None]:
        """The root's parameters (embeddings, head) gathered; the blocks gather their own in their forward.

        Every process must run the same forward passes meanwhile.
        """
        assert isinstance(wrapped, FSDPModule)
        wrapped.unshard()
        try:
            yield
        finally:
            wrapped.reshard()

    def call_student(self, wrapped: nn.Module, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the root's forward, where FSDP gathers the root's parameters.

        The root also initialises itself there: before the first training step, a block called directly
        would make itself a root. Each block gathers its own parameters in its forward.
        """
        with torch.no_grad(), self.autocast():
            result: T = wrapped(None, None, inside=fn)
        return result

    def exportable(
        self, wrapped: nn.Module, step: StepModule
    ) -> tuple[PreTrainedModel, dict[str, Tensor]] | None:
        """A CPU copy of the full student on process 0, filled from the gathered shards.

        The copy is built on the meta device, so no random initialisation is paid for. Every process must
        call it (it all-gathers the shards).
        """
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = get_model_state_dict(wrapped, options=options)
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
