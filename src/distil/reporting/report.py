"""``report.md`` with its PNG figures, from runs, pipeline folders and bench results."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from distil.errors import ConfigError, DataError
from distil.evaluation.bench_table import format_bench
from distil.reporting import plots
from distil.reporting.sources import Run, Sources, comparison_points, load_sources

__all__ = ["build_report"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _median(run: Run, key: str) -> float | None:
    values = [float(r[key]) for r in run.log if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| run | method | steps | dev metrics | params (M) | size (MB) | train time (s) | samples/s (median) "
        "| CUDA peak (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        results = (run.recipe or {}).get("results", {})
        dev = ", ".join(f"{k} {v:.4f}" for k, v in run.dev.items())
        dev = dev or ("- (finished, no evaluation)" if run.finished else "- (unfinished)")
        params = None if run.parameters is None else run.parameters / 1e6
        cells = [
            run.name,
            (run.recipe or {}).get("method", "-"),
            str(results.get("steps", max((int(r["step"]) for r in run.log), default=0))),
            dev,
            _fmt(params, ".2f"),
            _fmt(run.size_mb, ".1f"),
            _fmt(results.get("train_seconds"), ".0f"),
            _fmt(_median(run, "samples_per_s"), ".1f"),
            _fmt(_median(run, "cuda_peak_mem_gib"), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section(lines: list[str], title: str, png: str, drawn: bool, skipped: str, note: str = "") -> None:
    lines += ["", f"## {title}", ""]
    if drawn:
        lines += [f"![{title}]({png})", *([""] if note else []), *([note] if note else [])]
    else:
        lines.append(f"Skipped: {skipped}")


def _no_latency(sources: Sources) -> str:
    if sources.benches:
        return "the bench result has no task metric; run `distil bench` with --task to score the models."
    return "no latency measurements: pass a `distil bench --json` result (--bench) or a pipeline directory."


def build_report(
    paths: list[str | Path],
    out_dir: str | Path,
    *,
    bench: list[str | Path] | None = None,
    evals: list[str | Path] | None = None,
) -> Path:
    """Write ``report.md`` and its figures (PNG, 800 x 500 pixels) into ``out_dir``.

    Figures: loss curves per term for each run (``loss_<run>.png``), dev metrics over steps
    (``dev_metric.png``), and the accuracy-vs-latency and accuracy-vs-size views across models with their
    Pareto front (``accuracy_vs_latency.png``, ``accuracy_vs_size.png``). A figure whose data is absent is
    skipped and the report says why.

    Args:
        paths: Run directories, pipeline directories or bench JSON files.
        out_dir: Output folder (created).
        bench: More bench JSON files (``distil bench --json``), the source of latencies when given.
        evals: ``distil eval --json`` reports; their metrics are listed, and the generations of those
            run with ``--teacher`` (chat) shown side by side.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Nothing to report on.
        DataError: A path is not a run, pipeline or bench result.
    """
    if not paths and not bench and not evals:
        raise ConfigError("Give at least one run directory, pipeline directory or bench JSON to report on.")
    sources: Sources = load_sources(list(paths), bench)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Distillation report", "", "Sources: " + ", ".join(f"`{p}`" for p in [*paths, *(bench or [])])]
    if sources.runs:
        lines += ["", "## Runs", "", *_runs_table(sources.runs)]
    for run in sources.runs:
        if run.stages and not run.log:  # its losses are its stages'
            continue
        png = f"loss_{_slug(run.name)}.png"
        drawn = plots.loss_curves(run, out / png)
        _section(
            lines, f"Training losses: {run.name}", png, drawn, f"{run.path}/log.jsonl has no loss records."
        )
    if sources.runs:
        drawn = plots.dev_curves(sources.runs, out / "dev_metric.png")
        skipped = "no run logged dev metrics (train.eval_every > 0 logs them during training)."
        _section(lines, "Dev metric over steps", "dev_metric.png", drawn, skipped)
    points, metric, where = comparison_points(sources)
    metric = metric or "metric"
    drawn = plots.tradeoff(
        points,
        "latency_ms",
        f"latency at {where} (ms, median)",
        metric,
        "Accuracy vs latency",
        out / "accuracy_vs_latency.png",
    )
    _section(
        lines,
        "Accuracy vs latency",
        "accuracy_vs_latency.png",
        drawn,
        _no_latency(sources),
        f"Latency: {where}. The dashed line is the Pareto front (faster and more accurate is better).",
    )
    drawn = plots.tradeoff(
        points,
        "size_mb",
        "size of the weights on disk (MB)",
        metric,
        "Accuracy vs size",
        out / "accuracy_vs_size.png",
    )
    _section(
        lines,
        "Accuracy vs size",
        "accuracy_vs_size.png",
        drawn,
        "no model with both a dev metric and weights on disk (finished runs or a bench result).",
        "The dashed line is the Pareto front (smaller and more accurate is better).",
    )
    for path, result in sources.benches:
        s = result["settings"]
        lines += ["", f"## Benchmark: {path.name}", "", format_bench(result), ""]
        lines.append(
            f"Sequence length {s['seq_length']}, {s['threads']} threads, {s['repeats']} timed repeats after "
            f"{s['warmup']} warm-up passes; {s['timing']}. FLOPs: {s['flops_method']}."
        )
    for evaluated in evals or []:
        lines += ["", *_eval_section(Path(evaluated))]
    for path, _ in sources.summaries:
        table = path / "summary.md"
        if table.is_file():
            lines += ["", f"## Pipeline summary: {path.name}", "", table.read_text().strip()]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _eval_section(path: Path) -> list[str]:
    """An evaluation report: its metrics, and its generations beside the teacher's and the reference."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        metrics = report["metrics"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a `distil eval --json` report ({err}).") from None
    lines = [f"## Evaluation: {report.get('model', path.name)} on {report.get('task', '?')}", ""]
    lines += ["| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in metrics.items())]
    generations = report.get("generations") or []
    if generations:
        lines += ["", "Greedy generations (the end of each prompt, then each model's answer):", ""]
        lines += ["| prompt | teacher | student | reference |", "|---|---|---|---|"]
        for g in generations:
            cells = [g["prompt"][-60:], g["teacher"], g["student"], g["reference"]]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines
