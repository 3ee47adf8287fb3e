"""Read what a report is made of: runs (log + recipe), pipeline folders, and bench JSON files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.errors import DataError

__all__ = ["Point", "Run", "Sources", "comparison_points", "load_sources"]


@dataclass
class Run:
    """One training run.

    Attributes:
        name: Display name (the folder name, with its parent when names clash).
        path: The run directory.
        log: The records of ``log.jsonl`` in file order.
        recipe: ``student/recipe.json``, or ``None`` for an unfinished run.
        size_mb: Size of the student's weight files on disk, or ``None`` without a student.
        parameters: Parameters of the student (from the safetensors header), or ``None``.
        stages: For a run of several stages (TED, TinyBERT, HomoDistil with a head stage), the names of
            its stage runs, which the sources list after it (``<run>/<stage>``) with their own logs.
    """

    name: str
    path: Path
    log: list[dict[str, Any]]
    recipe: dict[str, Any] | None
    size_mb: float | None
    parameters: int | None
    stages: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The run exported its student (its recipe exists), with or without a dev metric."""
        return self.recipe is not None

    @property
    def metric(self) -> str | None:
        """The run's selection metric (e.g. ``accuracy``), from the recipe."""
        return (self.recipe or {}).get("results", {}).get("selection_metric")

    @property
    def dev(self) -> dict[str, float]:
        """Final dev metrics of the exported student, from the recipe."""
        return (self.recipe or {}).get("results", {}).get("dev") or {}


@dataclass(frozen=True)
class Point:
    """One model (in one runtime) in an accuracy / latency / size comparison."""

    model: str
    runtime: str
    metric: float
    latency_ms: float | None
    size_mb: float | None

    @property
    def label(self) -> str:
        """``model runtime``, or the model alone."""
        return f"{self.model} {self.runtime}".strip()


@dataclass
class Sources:
    """Everything a report draws on."""

    runs: list[Run] = field(default_factory=list)
    benches: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    summaries: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _student_size(student: Path) -> tuple[float | None, int | None]:
    files = sorted(student.glob("*.safetensors"))
    if not files:
        return None, None
    from safetensors import safe_open

    params = 0
    for f in files:
        with safe_open(str(f), framework="np") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                params += count
    return sum(f.stat().st_size for f in files) / 1e6, params


def _run(path: Path) -> Run:
    recipe_path = path / "student" / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
    size, params = _student_size(path / "student")
    return Run(path.name, path, _read_log(path / "log.jsonl"), recipe, size, params)


def _is_run(path: Path) -> bool:
    return (path / "log.jsonl").is_file() or (path / "student" / "recipe.json").is_file()


def _with_stages(path: Path) -> list[Run]:
    """A run, followed by its stage runs (``stages/<name>``) when it has any."""
    root = _run(path)
    folder = path / "stages"
    stages = [p for p in sorted(folder.iterdir()) if p.is_dir() and _is_run(p)] if folder.is_dir() else []
    root.stages = [p.name for p in stages]
    out = [root]
    for stage in stages:
        run = _run(stage)
        run.name = f"{path.name}/{stage.name}"
        out.append(run)
    return out


def load_sources(paths: list[str | Path], bench: list[str | Path] | None = None) -> Sources:
    """Sort inputs into runs, pipeline summaries and bench results.

    Args:
        paths: Run directories, pipeline directories (``summary.json`` plus one run per stage) or bench
            JSON files (from ``distil bench --json``).
        bench: More bench JSON files.

    Returns:
        The loaded sources; run names are made unique.

    Raises:
        DataError: A path is none of these, or a JSON file is not a bench result.
    """
    out = Sources()
    for raw in [*paths, *(bench or [])]:
        path = Path(raw)
        if path.is_file() and path.suffix == ".json":
            result = json.loads(path.read_text())
            if not isinstance(result, dict) or "rows" not in result or "settings" not in result:
                raise DataError(f"{path} is not a `distil bench --json` result (no 'settings' and 'rows').")
            out.benches.append((path, result))
        elif path.is_dir() and (path / "summary.json").is_file():
            out.summaries.append((path, json.loads((path / "summary.json").read_text())))
            out.runs += [_run(p) for p in sorted(path.iterdir()) if p.is_dir() and _is_run(p)]
        elif path.is_dir() and (_is_run(path) or (path / "stages").is_dir()):
            out.runs += _with_stages(path)
        else:
            raise DataError(
                f"{path} is not a run directory (log.jsonl or student/recipe.json), a pipeline directory "
                "(summary.json) or a bench JSON file."
            )
    names = [r.name for r in out.runs]
    for run in out.runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    return out


def comparison_points(sources: Sources) -> tuple[list[Point], str | None, str]:
    """Models to place on the accuracy-vs-latency and accuracy-vs-size plots.

    Bench results take precedence (one point per model and runtime, latency at their first batch size);
    otherwise pipeline summaries (latency at batch 1); otherwise finished runs (size only).

    Returns:
        ``(points, metric, where_latency_comes_from)``.
    """
    for path, result in sources.benches[:1]:
        settings = result["settings"]
        metric, bs = settings.get("main_metric"), str(settings["batch_sizes"][0])
        points = [
            Point(
                r["model"],
                r["runtime"],
                r["metrics"][metric],
                r["latency_ms"][bs]["median_ms"],
                r["size_mb"],
            )
            for r in result["rows"]
            if metric and metric in r.get("metrics", {})
        ]
        threads = f"{settings['threads']} thread" + ("s" if settings["threads"] != 1 else "")
        where = f"batch {bs} x {settings['seq_length']} tokens, {threads} ({path.name})"
        return points, metric, where
    runs_by_path = {str(r.path / "student"): r for r in sources.runs}
    for path, summary in sources.summaries[:1]:
        points = []
        metric = next((r.metric for r in sources.runs if r.metric), None)
        for row in summary.get("rows", []):
            run = runs_by_path.get(row.get("path", ""))
            if metric in row and "latency_ms_b1" in row:
                size = run.size_mb if run else None
                points.append(Point(row["model"], "pytorch-fp32", row[metric], row["latency_ms_b1"], size))
        seq = summary.get("config", {}).get("latency", {}).get("seq_length", "?")
        return points, metric, f"batch 1 x {seq} tokens ({path.name}/summary.json)"
    metric = next((r.metric for r in sources.runs if r.metric), None)
    points = [
        Point(r.name, "", r.dev[metric], None, r.size_mb)
        for r in sources.runs
        if metric and metric in r.dev and r.size_mb is not None
    ]
    return points, metric, ""
