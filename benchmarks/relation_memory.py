"""Peak memory and time of the chunked MiniLMv2 relation loss against the direct (one-chunk) computation.

One Q-Q relation (``relation_kl(q_s, q_s, q_t, q_t, mask, A_r)``) forward + backward at the paper's
pre-training shape: batch 8 x seq 512, A_r = 48 relation heads, student hidden 384, teacher hidden 768
(MiniLMv2, Wang et al., Findings of ACL 2021, arXiv:2012.15828, §4.1). Variants:

  direct:     head_chunk = A_r, row_chunk = S and plain autograd: a single un-chunked computation;
  chunked:    ``relation_kl`` as users call it: automatic chunk sizes, gradient formed per chunk in the
              forward pass (closed form ``softmax(z_s) - p_t``), nothing kept or recomputed;
  chunked_ckpt: the same chunks through autograd with non-reentrant ``torch.utils.checkpoint`` per chunk;
  chunked_autograd: the same chunks through plain autograd (every chunk's saved tensors kept for backward);
  rows:       as ``chunked`` with ``rows_head_chunk`` heads x ``rows_row_chunk`` query rows per chunk.

Each variant runs in a fresh subprocess. On CUDA the peak is ``torch.cuda.max_memory_allocated`` above what
was allocated before the loss; on CPU it is the process RSS high-water mark (``getrusage`` ``ru_maxrss``)
above the high-water mark reached before the loss (inputs built, kernels warmed on a tiny problem), since
torch's CPU allocations are invisible to ``tracemalloc``. On CPU the children run with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed (``mmap_threshold``), so freed tensors go back to the OS at once instead of
lingering in the heap and inflating RSS. Goals: loss relative difference <= 1e-5 and chunked peak <= 1/4 of
the direct one.

    .venv/bin/python benchmarks/relation_memory.py --config benchmarks/relation_memory.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from distil.config import read_yaml
from distil.losses.relations import _relation_kl, relation_chunks  # private: the backward-mode switch
from distil.schema import from_dict

BackwardMode = Literal["fused", "checkpoint", "autograd"]
VARIANTS = ("direct", "chunked", "chunked_ckpt", "chunked_autograd", "rows")


@dataclass
class BenchConfig:
    """Benchmark settings."""

    batch_size: int = 8
    seq_length: int = 512
    relation_heads: int = 48
    student_hidden: int = 384
    teacher_hidden: int = 768
    min_length: int = 384
    causal: bool = False
    rows_head_chunk: int = 8
    rows_row_chunk: int = 128
    repeats: int = 1
    threads: int = 2
    mmap_threshold: int = 65536
    device: str = "auto"
    seed: int = 0


def _device(cfg: BenchConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _inputs(cfg: BenchConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    b, s = cfg.batch_size, cfg.seq_length
    student = torch.randn(b, s, cfg.student_hidden, generator=g)
    teacher = torch.randn(b, s, cfg.teacher_hidden, generator=g)
    # Right padding with real lengths in [min_length, seq], so the masked path is what gets measured.
    lengths = torch.randint(min(cfg.min_length, s), s + 1, (b,), generator=g)
    lengths[0] = s
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    return student.to(device), teacher.to(device), mask.to(device)


def _chunks(cfg: BenchConfig, variant: str) -> tuple[int | None, int | None, BackwardMode]:
    if variant == "direct":
        return cfg.relation_heads, cfg.seq_length, "autograd"
    if variant == "rows":
        return cfg.rows_head_chunk, cfg.rows_row_chunk, "fused"
    modes: dict[str, BackwardMode] = {"chunked": "fused", "chunked_ckpt": "checkpoint"}
    return None, None, modes.get(variant, "autograd")


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(cfg: BenchConfig, variant: str, out: Path) -> None:
    """Run one variant in this (fresh) process and write its numbers and gradient to ``out``."""
    torch.set_num_threads(cfg.threads)
    device = _device(cfg)
    student, teacher, mask = _inputs(cfg, device)
    head_chunk, row_chunk, mode = _chunks(cfg, variant)
    heads = cfg.relation_heads

    def step(x: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.clone().requires_grad_(True)
        loss = _relation_kl(
            x,
            x,
            t,
            t,
            m,
            heads,
            causal=cfg.causal,
            head_chunk=head_chunk,
            row_chunk=row_chunk,
            backward=mode,
        )
        loss.backward()
        return loss.item(), x.grad

    # Warm kernels and allocator on a tiny problem so the high-water mark below is the inputs' alone.
    step(student[:1, :16], teacher[:1, :16], mask[:1, :16])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else _peak_bytes(device)
    times, peaks = [], []
    loss_value, grad = 0.0, torch.empty(0)
    for _ in range(cfg.repeats):
        grad = torch.empty(0)  # let the previous repeat's gradient go before the next one is made
        start = time.perf_counter()
        loss_value, grad = step(student, teacher, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        peaks.append(_peak_bytes(device) - base)
    sizes = relation_chunks(cfg.batch_size, cfg.seq_length, heads, head_chunk, row_chunk)
    chunks = math.ceil(heads / sizes[0]) * math.ceil(cfg.seq_length / sizes[1])
    torch.save({"grad": grad.cpu()}, out.with_suffix(".pt"))
    out.write_text(
        json.dumps(
            {
                "loss": loss_value,
                "peak": max(peaks),
                "time": statistics.median(times),
                "heads": sizes[0],
                "rows": sizes[1],
                "chunks": chunks,
                "mode": mode,
                "device": str(device),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    if args.variant:
        child(cfg, args.variant, args.out)
        return
    results, grads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            out = Path(tmp) / f"{variant}.json"
            command = [sys.executable, __file__, "--variant", variant, "--out", str(out)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(cfg.mmap_threshold)}
            subprocess.run(command + (["--config", args.config] if args.config else []), check=True, env=env)
            results[variant] = json.loads(out.read_text())
            grads[variant] = torch.load(out.with_suffix(".pt"))["grad"]
    direct = results["direct"]
    mib = 2**20
    print(
        f"relation_kl Q-Q fwd+bwd, batch {cfg.batch_size} x seq {cfg.seq_length} (real lengths "
        f"{cfg.min_length}..{cfg.seq_length}), A_r {cfg.relation_heads}, hidden {cfg.student_hidden} "
        f"(student) / {cfg.teacher_hidden} (teacher), causal={cfg.causal}, {direct['device']}, "
        f"{cfg.threads} threads, {cfg.repeats} repeat(s)"
    )
    metric = "max_memory_allocated" if direct["device"].startswith("cuda") else "ru_maxrss high-water"
    print(f"peak = {metric} above the pre-loss level; time = median seconds of forward + backward")
    print(
        f"  {'variant':<17}{'heads/chunk':>12}{'rows/chunk':>11}{'chunks':>8}{'backward':>11}"
        f"{'peak MiB':>10}{'time s':>9}{'loss':>16}{'loss rel diff':>15}{'grad rel diff':>15}"
    )
    for variant, r in results.items():
        loss_diff = abs(r["loss"] - direct["loss"]) / abs(direct["loss"])
        grad_diff = float((grads[variant] - grads["direct"]).norm() / grads["direct"].norm())
        print(
            f"  {variant:<17}{r['heads']:>12}{r['rows']:>11}{r['chunks']:>8}{r['mode']:>11}"
            f"{r['peak'] / mib:>10.1f}{r['time']:>9.2f}{r['loss']:>16.9f}{loss_diff:>15.2e}{grad_diff:>15.2e}"
        )
    chunked = results["chunked"]
    loss_diff = abs(chunked["loss"] - direct["loss"]) / abs(direct["loss"])
    ratio = chunked["peak"] / direct["peak"]
    print(
        f"value: |chunked - direct| / direct = {loss_diff:.2e}  (goal <= 1e-5: {_verdict(loss_diff <= 1e-5)})"
    )
    print(f"peak:  chunked / direct = {ratio:.3f}   (goal <= 0.25: {_verdict(ratio <= 0.25)})")
    for other in ("chunked_ckpt", "chunked_autograd"):
        print(
            f"chunked / {other}: peak {chunked['peak'] / results[other]['peak']:.3f}, "
            f"time {chunked['time'] / results[other]['time']:.3f}"
        )


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
