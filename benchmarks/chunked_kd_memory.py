"""Peak memory of token-level KD: distil's chunked KL (`distil.losses.kd_kl`) against the direct computation.

Each variant runs in a fresh process: it builds the student and teacher logits (``tokens x vocab``, filled
chunk by chunk so no larger temporary exists), reads its peak resident memory, computes the loss and its
gradient, and reads the peak again; the difference is the memory the loss itself needed. The direct
computation is the textbook one: ``T^2 * kl_div(log_softmax(s / T), softmax(t / T), "batchmean")`` in
float32. Goal: chunked extra memory <= 0.25 x direct, with equal value and gradient.

With ``--divergence KIND`` (`distil.losses.divergences`) the chunked side is ``divergence(kind)`` and the
direct side the same formula applied to all rows at once with plain autograd.

    .venv/bin/python benchmarks/chunked_kd_memory.py --tokens 4096 --vocab 128000 --dtype bfloat16
    .venv/bin/python benchmarks/chunked_kd_memory.py --tokens 4096 --vocab 128000 --divergence jsd
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from distil.losses import kd_kl
from distil.losses.divergences import DIVERGENCES, _rows_divergence, divergence

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _logits(tokens: int, vocab: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    out = torch.empty(tokens, vocab, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, tokens, 64):
        rows = out[start : start + 64]
        rows.copy_(torch.randn(rows.shape, generator=g) * 3)
    return out


def _direct(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p_s = F.log_softmax(student.float() / temperature, dim=-1)
    p_t = F.softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature**2


def _loss(
    variant: str, kind: str | None, student: torch.Tensor, teacher: torch.Tensor, t: float
) -> torch.Tensor:
    if kind is None:
        return kd_kl(student, teacher, t) if variant == "chunked" else _direct(student, teacher, t)
    if variant == "chunked":
        return divergence(student, teacher, kind, temperature=t)  # type: ignore[arg-type]
    coefficient = 0.5 if kind == "jsd" else 0.1  # the defaults `divergence` uses
    rows = _rows_divergence(kind, student.float() / t, teacher.float() / t, coefficient)
    return rows.mean() * t**2


def measure(
    variant: str, tokens: int, vocab: int, dtype: torch.dtype, temperature: float, kind: str | None = None
) -> dict[str, float]:
    """One variant's loss, gradient checksum, extra peak memory and time, in this process."""
    torch.set_num_threads(2)
    student = _logits(tokens, vocab, dtype, 0).requires_grad_(True)
    teacher = _logits(tokens, vocab, dtype, 1)
    before = _peak()
    start = time.perf_counter()
    loss = _loss(variant, kind, student, teacher, temperature)
    loss.backward()
    seconds = time.perf_counter() - start
    extra = _peak() - before  # before the checksums below, which make copies of their own
    grad = student.grad
    assert grad is not None
    grad_sum_abs = sum(float(rows.double().abs().sum()) for rows in grad.split(64))
    return {
        "loss": float(loss),
        "grad_sum_abs": grad_sum_abs,
        "extra_bytes": float(extra),
        "inputs_bytes": float(2 * student.numel() * student.element_size()),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=128000)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="dtype of the logits")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument(
        "--divergence", choices=DIVERGENCES, help="a divergence instead of kd_kl's forward KL"
    )
    parser.add_argument("--variant", choices=["direct", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = measure(
            args.variant, args.tokens, args.vocab, DTYPES[args.dtype], args.temperature, args.divergence
        )
        print(json.dumps(result))
        return
    results = {}
    for variant in ("direct", "chunked"):  # one after the other, each in a fresh process
        sizes = ["--tokens", str(args.tokens), "--vocab", str(args.vocab)]
        cmd = [sys.executable, __file__, "--variant", variant, *sizes, "--dtype", args.dtype,
               "--temperature", str(args.temperature)]  # fmt: skip
        cmd += ["--divergence", args.divergence] if args.divergence else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    gib = 2**30
    print(f"{args.divergence or 'kd_kl (forward KL)'}: {args.tokens} tokens x {args.vocab} vocabulary, "
          f"{args.dtype} logits (inputs {results['direct']['inputs_bytes'] / gib:.2f} GiB), "
          f"T = {args.temperature}")  # fmt: skip
    for variant, r in results.items():
        print(f"  {variant:<8} extra peak {r['extra_bytes'] / gib:7.2f} GiB   {r['seconds']:6.2f} s   "
              f"loss {r['loss']:.6f}   sum|grad| {r['grad_sum_abs']:.6f}")  # fmt: skip
    d, c = results["direct"], results["chunked"]
    print(f"chunked / direct extra peak memory = {c['extra_bytes'] / d['extra_bytes']:.3f}   (goal <= 0.25)")
    print(f"|loss difference| = {abs(c['loss'] - d['loss']):.2e}   relative sum|grad| difference = "
          f"{abs(c['grad_sum_abs'] - d['grad_sum_abs']) / d['grad_sum_abs']:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
