"""AdamW with no-decay parameter groups and a linear warm-up/decay schedule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import get_linear_schedule_with_warmup

from distil.run_config import TrainConfig
from distil.types import Resize

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "cut_optimizer_state",
    "optimizer_step",
    "trainable_parameters",
]

_NO_DECAY = ("bias", "layernorm", "layer_norm", "norm.weight", "ln_")


def trainable_parameters(modules: Iterable[nn.Module]) -> list[tuple[str, nn.Parameter]]:
    """Named parameters that require gradients, in a fixed order, each once."""
    seen: set[int] = set()
    out = []
    for i, module in enumerate(modules):
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                out.append((f"{i}.{name}", param))
    return out


def build_optimizer(
    named: list[tuple[str, nn.Parameter]], cfg: TrainConfig, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW where biases and normalisation weights get no weight decay; ``fused``: one kernel (CUDA)."""
    decay = [p for n, p in named if not any(k in n.lower() for k in _NO_DECAY)]
    no_decay = [p for n, p in named if any(k in n.lower() for k in _NO_DECAY)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (cfg.adam_betas[0], cfg.adam_betas[1])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.adam_eps, fused=fused or None)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    *,
    max_grad_norm: float,
    scaler: torch.amp.GradScaler | None = None,
) -> bool:
    """Clip, step the optimizer and, when it really stepped, the schedule; returns whether it stepped.

    With a loss scaler (float16) a step whose gradients overflowed is skipped by the scaler, and the
    schedule must not advance for it, or the learning rate would run ahead of the updates made.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is None:
        optimizer.step()
        stepped = True
    else:
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= before  # the scale drops exactly when the step was skipped
    if stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def cut_optimizer_state(optimizer: torch.optim.Optimizer, change: Resize) -> None:
    """Cut each narrowed parameter's per-entry state (AdamW's moments) as the parameter was cut.

    The step count is a scalar and stays. Gradients need nothing: the step before a resize zeroed them.
    """
    for param, axis, index in change.kept:
        entry = optimizer.state.get(param, {})
        for key, value in entry.items():
            if isinstance(value, DTensor) and value.ndim > 0:
                # Sharded like its (already cut) parameter: gathered, cut, and sharded as the parameter is.
                full = value.full_tensor().index_select(axis, index.to(value.device))
                assert isinstance(param, DTensor)
                entry[key] = distribute_tensor(full, param.device_mesh, param.placements)
            elif isinstance(value, torch.Tensor) and value.ndim > 0:
                entry[key] = value.index_select(axis, index.to(value.device))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio * total_steps`` steps, then linear decay to zero."""
    return get_linear_schedule_with_warmup(optimizer, round(warmup_ratio * total_steps), total_steps)
