"""The record of an export: ``export.json`` for tools and ``EXPORT.md`` for people, in ``onnx/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["versions", "write_record"]


def versions() -> dict[str, str]:
    """Versions of the libraries that made and checked an export."""
    import onnx
    import onnxruntime
    import transformers

    from distil import __version__

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "distil": __version__,
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` (``export.json``) and its markdown version to ``EXPORT.md`` beside it."""
    path.write_text(json.dumps(record, indent=2) + "\n")
    (path.parent / "EXPORT.md").write_text(_markdown(record))


def _agreement(check: dict[str, Any]) -> str:
    """``100%``, or ``100% of 5 decided rows`` where ties at int8 precision were left out."""
    decided, rows = check.get("decided", check["rows"]), check["rows"]
    return f"{check['agreement']:.0%}" + (f" of {decided} decided rows" if decided != rows else "")


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        "# ONNX export",
        "",
        f"Written by `distil export` on {record['created']} with {record['exporter']}, opset "
        f"{record['opset']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()) + ".",
        f"Inputs: {', '.join(record['inputs'])} (int64, dynamic batch and sequence axes); outputs: "
        f"{', '.join(record['outputs'])}.",
        f"Checked against PyTorch ({record['attn_implementation']} attention) on a padded probe batch of "
        f"{record['probe']['rows']} rows x {record['probe']['length']} tokens with a real attention mask.",
        "",
        "| file | size (MB) | max abs diff | max rel diff | argmax agreement | tolerance |",
        "|---|---|---|---|---|---|",
    ]
    for info in record["files"].values():
        check, tol = info["check"], info["tolerance"]
        limit = f"rel <= {tol['max_rel']:g}" + (
            f", agreement >= {tol['min_agreement']:.0%}" if "min_agreement" in tol else ""
        )
        lines.append(
            f"| {info['file']} | {info['bytes'] / 1e6:.1f} | {check['max_abs']:.3g} | {check['max_rel']:.3g} "
            f"| {_agreement(check)} | {limit} |"
        )
    if record.get("optimizer"):
        lines += ["", f"Fused by {record['optimizer']} (onnxruntime-only graphs)."]
    if "onnx-int8" in record["files"]:
        int8 = record["files"]["onnx-int8"]
        cpu = record.get("cpu") or {}
        flags = cpu.get("int8_flags")
        lines += [
            "",
            f"int8 format `{int8.get('format')}`: {int8.get('format_summary')}; made by "
            f"{int8['quantization']}.",
            f"Checked on {cpu.get('model') or 'an unknown CPU'} ({cpu.get('machine')}; int8 flags: "
            f"{', '.join(flags) if flags else 'none read'}). "
            + (
                "The format computes the same integers on every CPU, so the check holds wherever it runs."
                if int8.get("portable")
                else "The format is exact only on CPUs with VNNI or not x86: elsewhere it saturates."
            ),
        ]
    return "\n".join(lines) + "\n"
