"""``distil compare``: the grid run, scored, timed and summarised; everything it writes lives in ``RUN_DIR``.

``RUN_DIR/teacher``      the teacher's fine-tuning (when ``compare.teacher.finetune``)
``RUN_DIR/runs/S/M/seedK`` each cell: an ordinary run (or plan) of method row M at student shape S
``RUN_DIR/scores/``      each model's per-item test results (reused while the model is unchanged)
``RUN_DIR/latency.json`` the timings of the teacher and one student per shape (reused while settings hold)
``RUN_DIR/compare.json``, ``compare.md``, ``compare.png``  the summary, its table and its plot
``RUN_DIR/compare-config.json``  the config as read

Running the command again reuses every finished run and resumes an interrupted one, so a killed compare
goes on where it stopped; added seeds, rows or shapes run only what is new.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distil.compare.config import CompareSetup, check_models
from distil.compare.grid import run_cells, run_one
from distil.compare.report import TEACHER, Summary, format_table, recommend, summarise
from distil.compare.scores import ItemScores, score_model
from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.schema import to_dict

__all__ = ["run_compare"]


def run_compare(
    setup: CompareSetup,
    *,
    jobs: int = 1,
    progress: bool = True,
    max_latency_ms: float | None = None,
    min_keep: float | None = None,
    runtime: str = "pytorch-fp32",
) -> dict[str, Any]:
    """Run (or reuse) every run of the grid, score and time the students, and print the table.

    Args:
        setup: The validated grid (`distil.compare.config.build_setup`).
        jobs: Worker processes for the independent runs of each level (1: one after another).
        progress: Show progress bars (sequential runs only).
        max_latency_ms: The recommendation's latency budget (at the first timed batch size).
        min_keep: The recommendation's floor on the share of the teacher's metric kept.
        runtime: The runtime whose latency the budget reads (``pytorch-fp32`` or ``onnx-fp32``).

    Returns:
        The summary as written to ``compare.json``.
    """
    if runtime != "pytorch-fp32" and not setup.compare.latency.onnx:
        raise ConfigError(f"--runtime {runtime} reads ONNX timings: set compare.latency.onnx=true.")
    checked = check_models(setup)  # before anything is written
    root = setup.root
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "compare-config.json", json.dumps(setup.raw, indent=2, default=str))
    if setup.teacher_run is not None:
        print(f"[distil] compare: teacher -> {setup.teacher_run.run_dir}", flush=True)
        run_one(setup.teacher_run, progress=progress)
    if not checked:  # the cells could not be checked before the teacher they are taken from existed
        check_models(setup)
    run_cells(setup.cells, jobs=jobs, progress=progress)

    task = setup.task
    max_length = setup.base.data.max_length
    teacher = score_model(task, Path(setup.teacher), root / "scores" / "teacher.json", max_length=max_length)
    results: dict[tuple[str, str], dict[int, ItemScores]] = {}
    for c in setup.cells:
        student = Path(c.config.run_dir) / "student"
        cache = root / "scores" / f"{c.key}.json"
        results.setdefault((c.student, c.row), {})[c.seed] = score_model(
            task, student, cache, max_length=max_length
        )
    # One student per shape is timed: every method of a shape has the same architecture.
    models = {TEACHER: Path(setup.teacher)}
    for c in setup.cells:
        models.setdefault(c.student, Path(c.config.run_dir) / "student")
    timed = _latency(setup, models)
    summary = summarise(
        teacher, results, timed["parameters"], timed["latency"], baseline=setup.compare.baseline_row,
        split=setup.split, resamples=setup.compare.resamples, confidence=setup.compare.confidence,
    )  # fmt: skip
    summary.warnings += timed["notes"] + _chance_filters(setup)
    batch = str(setup.compare.latency.batch_sizes[0])
    line = recommend(summary, runtime=runtime, batch=batch, max_latency_ms=max_latency_ms, min_keep=min_keep)
    table = format_table(summary)
    plotted = _plot(summary, runtime, batch, root / "compare.png")
    out = {"summary": asdict(summary), "recommendation": line, "plot": str(plotted) if plotted else None}
    atomic_write_text(root / "compare.json", json.dumps(out, indent=2, default=str))
    atomic_write_text(root / "compare.md", table + "\n\n" + line + "\n")
    print(table)
    print(line)
    if plotted:
        print(f"[distil] compare: table {root / 'compare.md'}, plot {plotted}")
    return out


def _latency(setup: CompareSetup, models: dict[str, Path]) -> dict[str, Any]:
    """Parameters and latency of each model, timed side by side (reused from ``latency.json``)."""
    from distil.bench import run_bench
    from distil.deploy import export_onnx, find_exports
    from distil.deploy.onnx import ExportError

    cfg = setup.compare.latency
    path = setup.root / "latency.json"
    key = {"settings": to_dict(cfg), "models": {k: str(v) for k, v in models.items()}}
    if path.is_file():
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("key") == key:
            return kept["result"]
    notes = []
    if cfg.onnx:
        for name, model_dir in models.items():
            if find_exports(model_dir):
                continue
            try:
                export_onnx(model_dir)
            except ExportError as err:
                notes.append(f"{name}: no ONNX timing ({err})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = run_bench(
            {k: str(v) for k, v in models.items()}, seq_length=cfg.seq_length, batch_sizes=cfg.batch_sizes,
            repeats=cfg.repeats, threads=cfg.threads, onnx=cfg.onnx,
        )  # fmt: skip
    latency: dict[str, dict[str, dict[str, float]]] = {}
    parameters: dict[str, int] = {}
    for row in bench["rows"]:
        if row["runtime"] == "onnx-int8":
            continue
        parameters[row["model"]] = int(row["parameters"])
        latency.setdefault(row["model"], {})[row["runtime"]] = {
            bs: float(t["median_ms"]) for bs, t in row["latency_ms"].items()
        }
    result = {
        "parameters": parameters,
        "latency": latency,
        "notes": notes,
        "machine": bench["settings"]["machine"],
    }
    atomic_write_text(path, json.dumps({"key": key, "result": result}, indent=2))
    return result


def _plot(summary: Summary, runtime: str, batch: str, path: Path) -> Path | None:
    from distil.reporting.plots import interval_tradeoff

    # The colours name the methods; each shape is labelled once, beside its first row.
    firsts = {r.student: i for i, r in reversed(list(enumerate(summary.rows)))}
    points = [
        (r.student if firsts[r.student] == i else "", r.method, r.latency_ms.get(runtime, {}).get(batch),
         r.metric.value * summary.scale, r.metric.low * summary.scale, r.metric.high * summary.scale)
        for i, r in enumerate(summary.rows)
    ]  # fmt: skip
    xlabel = f"{runtime} latency at batch {batch} (ms)"
    ylabel = f"{summary.split} {summary.metric} ({round(summary.settings['confidence'] * 100)} % interval)"
    return path if interval_tradeoff(points, xlabel, ylabel, path) else None


def _chance_filters(setup: CompareSetup) -> list[str]:
    """TED rows run on even when a filter ended at chance-level loss; the table says how many did."""
    from distil.methods.ted_filters import CHANCE_NOTE

    found = []
    for c in setup.cells:
        recipe = Path(c.config.run_dir) / "student" / "recipe.json"
        stages = json.loads(recipe.read_text(encoding="utf-8")).get("stages") or {}
        count = sum(
            str(w).startswith(CHANCE_NOTE) for s in stages.values() for w in (s.get("warnings") or [])
        )
        if count:
            found.append(f"{c.key} ({count})")
    if not found:
        return []
    return [
        f"TED filters ended at chance-level loss in {', '.join(found)}: those layers carried nothing to "
        "align; more epochs or a higher learning rate for the filter stages may change that row."
    ]
