"""Issue 26 evidence, step 3: the seed papers' orderings as paired intervals, from `distil compare` folders.

For every task folder OUT/<task>/compare written by experiments/compare_glue.sh, reads the per-item test
results that `distil compare` cached (scores/<shape>/<row>/seed<k>.json) and computes the paired
difference of each claim's two cells with the same two-level bootstrap as the compare table (test items
and seeds drawn with replacement, seed k of one cell paired with seed k of the other). Without --claim, the
TED paper's claims are made for each student shape (rows of one shape); `--claim A>B` names cells as
SHAPE/ROW, so a claim may also set two shapes against each other (e.g. two task-agnostic students, each a
shape of its own, fine-tuned by the same row). Every cell of a task is scored on the same test items.
Verdict per claim: "holds" (interval above 0), "reversed" (below 0), "cannot be told apart" (holds 0).

Usage: python experiments/compare_claims.py OUT_DIR [TASK ...] [--claim SHAPE/ROW>SHAPE/ROW ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from distil.evaluation.intervals import bootstrap

CLAIMS = [("ted", "kd"), ("ted", "lwd"), ("ted", "finetune"), ("kd", "finetune"), ("lwd", "finetune")]


def _cells(scores: Path) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """The metric, SHAPE/ROW -> predictions [seeds, items], and the references of one compare."""
    results, metric, refs = {}, "", None
    for row_dir in sorted(p for p in scores.glob("*/*") if p.is_dir()):
        seeds = sorted(row_dir.glob("seed*.json"), key=lambda p: int(p.stem[4:]))
        records = [json.loads(p.read_text()) for p in seeds]
        metric, refs = records[0]["metric"], np.asarray(records[0]["refs"])
        results[f"{row_dir.parent.name}/{row_dir.name}"] = np.stack([np.asarray(r["preds"]) for r in records])
    if refs is None:
        raise SystemExit(f"{scores}: no cached scores (run `distil compare` on it first)")
    return metric, results, refs


def claims(task_dir: Path, named: list[tuple[str, str]]) -> list[str]:
    """Markdown rows: task, claim, difference [interval], p, verdict."""
    metric, results, refs = _cells(task_dir / "compare" / "scores")
    shapes = sorted({cell.split("/")[0] for cell in results})
    pairs = named or [(f"{s}/{a}", f"{s}/{b}") for s in shapes for a, b in CLAIMS]
    pairs = [(a, b) for a, b in pairs if a in results and b in results]
    _, diffs = bootstrap(metric, results, refs, pairs=pairs, resamples=2000, seed=0)
    scale = 1.0 if metric == "mean" else 100.0
    lines = []
    for (a, b), d in diffs.items():
        verdict = "holds" if d.low > 0 else "reversed" if d.high < 0 else "cannot be told apart"
        lines.append(
            f"| {task_dir.name} | {a} > {b} | {d.value * scale:+.1f} [{d.low * scale:+.1f}, "
            f"{d.high * scale:+.1f}] | {d.p_value:.3f} | {verdict} |"
        )
    return lines


def main() -> None:
    """Print the claims table of the tasks asked for (every compared task by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("tasks", nargs="*")
    parser.add_argument("--claim", action="append", default=[], help="SHAPE/ROW>SHAPE/ROW")
    args = parser.parse_args()
    split = [c.split(">", 1) for c in args.claim]
    if any(len(pair) != 2 or "/" not in pair[0] or "/" not in pair[1] for pair in split):
        parser.error("--claim takes SHAPE/ROW>SHAPE/ROW, e.g. homodistil/finetune>minilmv2/finetune")
    out: Path = args.out
    tasks = args.tasks or sorted(p.name for p in out.iterdir() if (p / "compare" / "scores").is_dir())
    print("| task | claim | paired difference [95 % interval] | p | verdict |")
    print("|---|---|---|---|---|")
    for task in tasks:
        for line in claims(out / task, [(a, b) for a, b in split]):
            print(line)


if __name__ == "__main__":
    main()
