"""One optimiser step as the loop takes it: each micro-batch's forwards and backward, then the update."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distil.adapters import forward_features
from distil.methods import Method
from distil.training.assembly import Modules
from distil.training.batches import StepBatch
from distil.training.dist import DistEnv
from distil.training.engines import Engine
from distil.training.precision import Precision
from distil.training.teacher_cache import TeacherCache
from distil.training.topk_cache import TopKCache
from distil.types import Batch, Features

__all__ = ["Stepper"]


@dataclass
class Stepper:
    """One optimiser step as the loop takes it: each micro-batch's forwards and backward, then the update."""

    mods: Modules
    engine: Engine
    method: Method
    precision: Precision
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    max_grad_norm: float
    env: DistEnv
    cache: TeacherCache | TopKCache | None = None

    def teacher(self, batch: Batch) -> Features | None:
        """The teacher's features of a micro-batch: its forward without gradient, or the cache."""
        request = self.method.teacher_request()
        if request is None:
            return None
        if self.cache is not None:
            return self.cache.features(batch)
        with torch.no_grad():
            features = forward_features(self.mods.teacher, batch, request)
        p = self.precision  # beside a float32 (or pure bf16) student, features in the student's dtype
        return (
            features.to_dtype(p.param_dtype) if not p.mixed and p.teacher_dtype != p.param_dtype else features
        )

    def step(self, step_batch: StepBatch) -> dict[str, Tensor]:
        """Train on this process's share of one global batch; returns the loss terms (on the device)."""
        terms: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.env.device))
        last = len(step_batch.micro) - 1
        for i, (micro, share) in enumerate(zip(step_batch.micro, step_batch.shares, strict=True)):
            with self.engine.accumulating(self.mods.wrapped, sync=i == last):
                # Methods that corrupt their inputs (MLM masking) do it here, before both forwards.
                batch = self.method.prepare_batch(micro.to(self.env.device, non_blocking=True))
                teacher = self.teacher(batch)
                with self.engine.autocast():
                    total, named_parts = self.mods.wrapped(batch, teacher)
                # DDP and FSDP average gradients over processes; the shares sum to 1 over all of them.
                loss = total * share * self.env.world
                self.engine.backward(loss, self.scaler)
            terms["total"] = terms["total"] + total.detach().float() * share
            for name, value in named_parts.items():
                terms[name] = terms[name] + value.detach().float() * share
        self.method.on_gradients(1.0 / self.scaler.get_scale() if self.scaler is not None else 1.0)
        self.engine.optimizer_step(
            self.mods.optimizer, self.scheduler, self.mods.params, max_grad_norm=self.max_grad_norm,
            scaler=self.scaler,
        )  # fmt: skip
        return dict(terms)
