"""AdamW with no-decay parameter groups and a linear warm-up/decay schedule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from distil.run_config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "trainable_parameters"]

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


def build_optimizer(named: list[tuple[str, nn.Parameter]], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW where biases and normalisation weights get no weight decay."""
    decay = [p for n, p in named if not any(k in n.lower() for k in _NO_DECAY)]
    no_decay = [p for n, p in named if any(k in n.lower() for k in _NO_DECAY)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (cfg.adam_betas[0], cfg.adam_betas[1])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.adam_eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio * total_steps`` steps, then linear decay to zero."""
    return get_linear_schedule_with_warmup(optimizer, round(warmup_ratio * total_steps), total_steps)
