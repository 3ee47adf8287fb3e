"""CPU/GPU inference latency of several models measured side by side in one run, interleaved or in blocks."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from distil.adapters import model_inputs

__all__ = ["Latency", "measure_latency", "random_batch", "time_blocks", "time_interleaved"]


@dataclass(frozen=True)
class Latency:
    """Latency of one model at one batch size, in milliseconds per forward pass.

    Attributes:
        median_ms: Median over the timed passes.
        min_ms: Fastest pass.
        max_ms: Slowest pass.
        repeats: Timed passes.
        q1_ms: First quartile (NaN with fewer than two passes).
        q3_ms: Third quartile (NaN with fewer than two passes).
    """

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    q1_ms: float = math.nan
    q3_ms: float = math.nan

    @classmethod
    def of(cls, times_ms: list[float]) -> Latency:
        """Summarise a list of per-pass times in milliseconds."""
        q1, _, q3 = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else (math.nan,) * 3
        return cls(statistics.median(times_ms), min(times_ms), max(times_ms), len(times_ms), q1, q3)


def random_batch(vocab_size: int, batch_size: int, seq_length: int) -> dict[str, torch.Tensor]:
    """A fixed (seeded) batch of random token ids without padding, with mask and token types.

    Returns:
        ``input_ids``, ``attention_mask`` (ones) and ``token_type_ids`` (zeros), each ``(B, L)`` int64.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab_size, 1000), (batch_size, seq_length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 3,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Latency]:
    """Time each zero-argument callable, all of them in turn within every repeat.

    Interleaving means a burst of load on the machine hits every candidate alike, so their ratios stay
    meaningful even when the absolute times do not.

    Args:
        fns: Name -> callable running one forward pass.
        repeats: Timed calls per callable.
        warmup: Untimed calls per callable first.
        synchronize: Called before and after each timed call (``torch.cuda.synchronize`` on GPU).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += _timed_calls(fn, 1, 0, synchronize)
    return {name: Latency.of(t) for name, t in times.items()}


def time_blocks(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 3,
    rounds: int = 3,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Latency]:
    """Time each callable in blocks: its warm-up and a share of its repeats back to back, in rotation.

    For runtimes whose idle threads keep spinning after a call (onnxruntime's default): interleaved
    single calls would time each model while the previous one's threads still hold the cores. Each
    block's own warm-up absorbs that hand-over; rotating the blocks over ``rounds`` still spreads a burst
    of load on the machine across every candidate.

    Args:
        fns: Name -> callable running one forward pass.
        repeats: Timed calls per callable, split as evenly as possible over the rounds.
        warmup: Untimed calls at the start of every block.
        rounds: Blocks per callable (at most ``repeats``).
        synchronize: Called before and after each timed call (``torch.cuda.synchronize`` on GPU).
    """
    rounds = max(1, min(rounds, repeats))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        share = repeats // rounds + (1 if r < repeats % rounds else 0)
        for name, fn in fns.items():
            times[name] += _timed_calls(fn, share, warmup, synchronize)
    return {name: Latency.of(t) for name, t in times.items()}


def _timed_calls(
    fn: Callable[[], object], n: int, warmup: int, synchronize: Callable[[], None] | None
) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        if synchronize is not None:
            synchronize()
        start = time.perf_counter()
        fn()
        if synchronize is not None:
            synchronize()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure_latency(
    models: dict[str, PreTrainedModel],
    *,
    batch_size: int,
    seq_length: int,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, Latency]:
    """Time a forward pass of each model on the same random batch, interleaved (see `time_interleaved`).

    Args:
        models: Name -> model (already on the target device).
        batch_size: Sequences per forward pass.
        seq_length: Tokens per sequence (no padding).
        repeats: Timed passes per model; the median is reported.
        warmup: Untimed passes per model first.
    """
    first = next(iter(models.values()))
    device = next(first.parameters()).device
    batch = random_batch(int(first.config.vocab_size), batch_size, seq_length)
    fns: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        model.eval()
        inputs = {k: v.to(device) for k, v in model_inputs(model, batch).items()}
        fns[name] = _forward(model, inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return time_interleaved(fns, repeats=repeats, warmup=warmup, synchronize=sync)


def _forward(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    @torch.inference_mode()
    def run() -> object:
        return model(**inputs)

    return run
