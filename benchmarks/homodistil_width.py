"""HomoDistil pays for the width it has: its step at the target width against MiniLMv2's, and whole runs.

1. ``step``: a HomoDistil run on the embedded teacher (with an MLM head) is driven past its last prune
   event (``t_f = 2``), so its student is the 6 x 192 target narrowed in place; then its loop step
   (`Stepper.step` and ``on_step_end``) alternates with MiniLMv2's on a 6 x 192 student of the same
   teacher, same batch; medians of ``repeats``. Goal: HomoDistil / MiniLMv2 <= 1.10.
2. ``run``: whole ``distil distill`` runs of HomoDistil at the same budget, pruning by ``masks`` (the
   full width until export, as before) and by ``slicing``; wall time of each and their ratio, and the
   last step's loss. The two are the same run up to float rounding only without dropout: the embedded
   teacher's copy keeps its dropout (0.1), whose draws depend on the tensors' widths, so from the first
   prune event on the two runs see different dropout and, after it, different MLM masks.

    .venv/bin/python benchmarks/homodistil_width.py --config benchmarks/homodistil_width.yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.config import build_run_config, read_yaml
from distil.schema import from_dict
from distil.training.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from floor import BenchConfig as FloorConfig
from floor import _run_config, _teachers, alternating_medians, loop_stepping

GOAL = 1.10


@dataclass
class BenchConfig:
    """Settings; ``step`` / ``runs`` switch the two parts; ``tiny`` uses the test suite's 2 x 32 teacher.

    ``runs_without_dropout``: the whole runs start from a copy of the teacher with dropout 0, so the two
    modes are the same run up to float rounding, and every step's losses are compared.
    """

    corpus_batch: int = 32
    corpus_seq: int = 128
    repeats: int = 15
    warmup: int = 3
    threads: int = 2
    seed: int = 0
    run_steps: int = 40
    run_t_i: int = 4
    run_t_f: int = 28
    run_delta_t: int = 4
    step: bool = True
    runs: bool = True
    runs_without_dropout: bool = False
    tiny: bool = False


def _floor_cfg(cfg: BenchConfig) -> FloorConfig:
    return FloorConfig(
        corpus_batch=cfg.corpus_batch, corpus_seq=cfg.corpus_seq, seed=cfg.seed, tiny=cfg.tiny, methods=[]
    )


def _step_ratio(cfg: BenchConfig, folder: Path, teachers: dict[str, Path]) -> dict[str, float]:
    fc = _floor_cfg(cfg)
    homo = _run_config("homodistil", fc, folder, teachers)
    homo["method"] |= {"t_i": 0, "t_f": 2, "delta_t": 1}
    homo["run_dir"] = str(folder / "step-homodistil")
    minilm = _run_config("minilmv2", fc, folder, teachers)
    steps = {"homodistil": loop_stepping(homo, 2)[0], "minilmv2": loop_stepping(minilm)[0]}
    med = alternating_medians(steps, cfg.warmup, cfg.repeats)
    return {"homodistil_ms": med["homodistil"], "minilmv2_ms": med["minilmv2"]} | {
        "ratio": med["homodistil"] / med["minilmv2"]
    }


def _without_dropout(teacher: Path, folder: Path) -> Path:
    config = json.loads((teacher / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    out = folder / "mlm-no-dropout"
    shutil.copytree(teacher, out)
    (out / "config.json").write_text(json.dumps(config))
    return out


def _whole_runs(cfg: BenchConfig, folder: Path, teachers: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.runs_without_dropout:
        teachers = teachers | {"mlm": _without_dropout(teachers["mlm"], folder)}
    losses = {}
    for pruning in ("masks", "slicing"):
        raw = _run_config("homodistil", _floor_cfg(cfg), folder, teachers)
        raw["run_dir"] = str(folder / f"run-{pruning}")
        raw["method"] |= {
            "t_i": cfg.run_t_i, "t_f": cfg.run_t_f, "delta_t": cfg.run_delta_t, "pruning": pruning,
        }  # fmt: skip
        raw["train"] |= {"max_steps": cfg.run_steps, "log_every": 1, "checkpoint_every": 0}
        start = time.perf_counter()
        result = train(build_run_config(raw), overwrite=True, progress=False)
        seconds = time.perf_counter() - start
        lines = (result.run_dir / "log.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if '"loss/total"' in line]  # one a step
        losses[pruning] = records
        out[pruning] = {
            "wall_s": seconds, "train_s": result.train_seconds, "last_loss": records[-1]["loss/total"],
        }  # fmt: skip
        print(
            f"run pruning={pruning:<8} wall {seconds:7.1f} s   loop {result.train_seconds:7.1f} s", flush=True
        )
    out["max_rel_loss_difference"] = max(
        abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
        for a, b in zip(losses["slicing"], losses["masks"], strict=True)
        for k in b
        if k.startswith("loss/")
    )
    out["wall_ratio"] = out["slicing"]["wall_s"] / out["masks"]["wall_s"]
    out["loop_ratio"] = out["slicing"]["train_s"] / out["masks"]["train_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teachers = _teachers(_floor_cfg(cfg), folder)
        step = _step_ratio(cfg, folder, teachers) if cfg.step else {}
        if step:
            verdict = "met" if step["ratio"] <= GOAL else "NOT met"
            print(
                f"step at the target width: homodistil {step['homodistil_ms']:.1f} ms   minilmv2 "
                f"{step['minilmv2_ms']:.1f} ms   homodistil / minilmv2 = {step['ratio']:.3f}   "
                f"(goal <= {GOAL:.2f}: {verdict})",
                flush=True,
            )
        runs = _whole_runs(cfg, folder, teachers) if cfg.runs else {}
        if runs:
            print(
                f"whole run, slicing / masks: wall {runs['wall_ratio']:.3f}   loop {runs['loop_ratio']:.3f}"
                f"   last loss {runs['slicing']['last_loss']:.6f} vs {runs['masks']['last_loss']:.6f}   "
                f"largest relative difference of a step's loss term {runs['max_rel_loss_difference']:.2e}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": cfg.__dict__, "step": step, "runs": runs}, indent=2)
        )


if __name__ == "__main__":
    main()
