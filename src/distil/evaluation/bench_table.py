"""The markdown table of a `distil.bench.run_bench` result (for the console, reports and model cards)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["format_bench"]


def format_bench(result: dict[str, Any]) -> str:
    """A markdown table of a `run_bench` result."""
    settings, rows = result["settings"], result["rows"]
    sizes = [str(bs) for bs in settings["batch_sizes"]]
    metric = settings.get("main_metric")
    head = ["model", "runtime", "params (M)", "size (MB)", "MFLOPs/token"]
    head += [metric] if metric else []
    head += [f"b={b} ms median [min-max]" for b in sizes] + [f"b={b} seq/s" for b in sizes]
    head += [f"vs teacher, same runtime b={b}" for b in sizes] + [f"vs own PyTorch b={b}" for b in sizes]
    head += [f"vs teacher PyTorch b={b}" for b in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        runtime = f"{r['runtime']} ({r['int8_format']})" if r.get("int8_format") else r["runtime"]
        cells = [r["model"], runtime, f"{r['parameters'] / 1e6:.3g}", f"{r['size_mb']:.3g}"]
        cells.append(f"{r['flops_per_token'] / 1e6:.3g}")
        if metric:
            cells.append(f"{r.get('metrics', {}).get(metric, np.nan):.4f}")
        for b in sizes:
            t = r["latency_ms"][b]
            cells.append(f"{t['median_ms']:.1f} [{t['min_ms']:.1f}-{t['max_ms']:.1f}]")
        cells += [f"{r['throughput_seq_per_s'][b]:.1f}" for b in sizes]
        same = r.get("distillation_speedup") or {}
        cells += [f"{same[b]:.2f}x" if b in same else "-" for b in sizes]
        own = r.get("runtime_speedup") or {}
        cells += [f"{own[b]:.2f}x" if b in own else "-" for b in sizes]
        cells += [f"{r['speedup'][b]:.2f}x" for b in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Note: {n}" for n in result.get("notes") or []]
    return "\n".join(lines + (["", *notes] if notes else []))
