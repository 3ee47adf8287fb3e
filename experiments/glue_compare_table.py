"""Markdown table of a glue_compare.sh output folder: each row's dev metrics per seed and their mean.

Usage: .venv/bin/python experiments/glue_compare_table.py OUT_DIR
Reads OUT_DIR/<task>/teacher and OUT_DIR/<task>/seed<N>/<row> (each run's ``student/recipe.json``, the dev
metrics of the epoch it kept); a run that has not finished is left out and its cell says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

from distil.metrics import GLUE_METRIC_KEYS

ROWS = ("finetune", "kd", "lwd", "ted")
OPTIONAL = ("ted-first",)  # TED with token-0 filter heads (glue_compare.sh TED_FIRST=1)
TASKS = ("rte", "mrpc", "stsb", "cola", "sst2", "squad")
METRICS = GLUE_METRIC_KEYS | {"squad": ("exact_match", "f1")}


def dev_metrics(run: Path) -> dict[str, float] | None:
    """The dev metrics a finished run kept, or None while it is unfinished."""
    recipe = run / "student" / "recipe.json"
    if not recipe.is_file():
        return None
    return json.loads(recipe.read_text())["results"]["dev"]


def cell(values: list[dict[str, float]], names: tuple[str, ...]) -> str:
    """'a / b' of the seed means (percent, one decimal), with the seeds' own values behind."""
    scale = 1.0 if "f1" in names and "exact_match" in names else 100.0  # SQuAD metrics are in percent
    means = " / ".join(f"{scale * mean(v[n] for v in values):.1f}" for n in names)
    if len(values) == 1:
        return means
    seeds = "; ".join(" / ".join(f"{scale * v[n]:.1f}" for n in names) for v in values)
    return f"{means} ({seeds})"


def chance_filters(run: Path) -> int:
    """How many Stage-I filters of a TED run (both sides) ended at chance-level loss."""
    count = 0
    for stage in ("teacher-filters", "student-filters"):
        recipe = run / "stages" / stage / "student" / "recipe.json"
        if recipe.is_file():
            warnings = json.loads(recipe.read_text())["results"].get("warnings") or []
            count += sum("chance-level" in w for w in warnings)
    return count


def table(out: Path) -> str:
    """One line per task: teacher, then each row's mean over the finished seeds."""
    optional = [r for r in OPTIONAL if any(out.glob(f"*/seed*/{r}/student/recipe.json"))]
    rows = (*ROWS, *optional)
    names_row = ["fine-tune only", "KD", "LWD", "TED", *(["TED, token-0 heads"] if optional else [])]
    lines = [
        "| task (metric) | seeds | teacher | " + " | ".join(names_row) + " | filters at chance (TED rows) |",
        "|---|---|---|" + "---|" * len(names_row) + "---|",
    ]
    for task in TASKS:
        names, root = METRICS[task], out / task
        if not root.is_dir():
            continue
        seeds = sorted(p for p in root.glob("seed*") if p.is_dir())
        runs = {s.name.removeprefix("seed"): {row: dev_metrics(s / row) for row in rows} for s in seeds}
        # A seed counts once its required rows are done; an optional row shows where all such seeds have it.
        done = {seed: got for seed, got in runs.items() if all(got[r] for r in ROWS)}
        teacher = dev_metrics(root / "teacher")
        cells = [cell([teacher], names) if teacher else "unfinished"]
        for row in rows:
            values = [got[row] for got in done.values()]
            if row in OPTIONAL and (not done or not all(values)):
                cells.append("-")
                continue
            cells.append(cell(values, names) if done else "unfinished")  # type: ignore[arg-type]
        ted_rows = [r for r in rows if r.startswith("ted") and all(got[r] for got in done.values())]
        at_chance = {r: sum(chance_filters(root / f"seed{s}" / r) for s in done) for r in ted_rows}
        cells.append(", ".join(f"{r}: {n}" for r, n in at_chance.items()))
        lines.append(f"| {task} ({' / '.join(names)}) | {', '.join(done) or '-'} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: glue_compare_table.py OUT_DIR (a glue_compare.sh output folder)")
    print(table(Path(sys.argv[1])))
