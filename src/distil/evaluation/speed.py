"""CPU/GPU inference latency of several models, measured side by side (interleaved) in one run."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from distil.adapters import model_inputs

__all__ = ["Latency", "measure_latency"]


@dataclass(frozen=True)
class Latency:
    """Latency of one model at one batch size, in milliseconds per forward pass."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


@torch.inference_mode()
def measure_latency(
    models: dict[str, PreTrainedModel],
    *,
    batch_size: int,
    seq_length: int,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, Latency]:
    """Time a forward pass of each model on the same random batch.

    Models are timed in turn within every repeat, so a burst of load on the machine hits all of them
    alike and their ratio stays meaningful.

    Args:
        models: Name -> model (already on the target device).
        batch_size: Sequences per forward pass.
        seq_length: Tokens per sequence (no padding).
        repeats: Timed passes per model; the median is reported.
        warmup: Untimed passes per model first.
    """
    first = next(iter(models.values()))
    vocab = int(first.config.vocab_size)
    device = next(first.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab, 1000), (batch_size, seq_length), generator=generator)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }
    inputs = {
        name: {k: v.to(device) for k, v in model_inputs(m, batch).items()} for name, m in models.items()
    }
    for model in models.values():
        model.eval()
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(warmup + repeats):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**inputs[name])
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: Latency(statistics.median(t), min(t), max(t), len(t)) for name, t in times.items()}
