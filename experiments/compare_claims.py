"""Issue 26 evidence, step 3: the seed papers' orderings as paired intervals, from `distil compare` folders.

For every task folder OUT/<task>/compare written by experiments/compare_glue.sh, reads the per-item test
results that `distil compare` cached (scores/<shape>/<row>/seed<k>.json) and computes, for each student
shape, the paired difference of each claim's two rows with the same two-level bootstrap as the compare
table (test items and seeds drawn with replacement, seed k of one row paired with seed k of the other).
Verdict per claim: "holds" (interval above 0), "reversed" (below 0), "cannot be told apart" (holds 0).

Usage: python experiments/compare_claims.py OUT_DIR [TASK ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from distil.evaluation.intervals import bootstrap

CLAIMS = [("ted", "kd"), ("ted", "lwd"), ("ted", "finetune"), ("kd", "finetune"), ("lwd", "finetune")]


def _load(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    record = json.loads(path.read_text())
    return record["metric"], np.asarray(record["preds"]), np.asarray(record["refs"])


def claims(task_dir: Path) -> list[str]:
    """Markdown rows: task, shape, claim, difference [interval], p, verdict."""
    scores = task_dir / "compare" / "scores"
    lines = []
    for shape in sorted(p.name for p in scores.iterdir() if p.is_dir()):
        results, metric, refs = {}, "", None
        for row_dir in sorted((scores / shape).iterdir()):
            seeds = sorted(row_dir.glob("seed*.json"), key=lambda p: int(p.stem[4:]))
            loaded = [_load(p) for p in seeds]
            metric, refs = loaded[0][0], loaded[0][2]
            results[row_dir.name] = np.stack([x[1] for x in loaded])
        pairs = [(a, b) for a, b in CLAIMS if a in results and b in results]
        assert refs is not None
        _, diffs = bootstrap(metric, results, refs, pairs=pairs, resamples=2000, seed=0)
        scale = 1.0 if metric == "mean" else 100.0
        for (a, b), d in diffs.items():
            verdict = "holds" if d.low > 0 else "reversed" if d.high < 0 else "cannot be told apart"
            lines.append(
                f"| {task_dir.name} | {shape} | {a} > {b} | {d.value * scale:+.1f} [{d.low * scale:+.1f}, "
                f"{d.high * scale:+.1f}] | {d.p_value:.3f} | {verdict} |"
            )
    return lines


def main() -> None:
    out = Path(sys.argv[1])
    tasks = sys.argv[2:] or sorted(p.name for p in out.iterdir() if (p / "compare" / "scores").is_dir())
    print("| task | student | claim | paired difference [95 % interval] | p | verdict |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        for line in claims(out / task):
            print(line)


if __name__ == "__main__":
    main()
