"""KD step time on the engine against plain PyTorch floors, and whole-loop throughput against an older distil.

Part 1, in this process: three cases on the same batch, interleaved within each repeat so machine noise
hits them alike:
  student: a plain PyTorch student step on a copy of the student (forward, task loss, backward, clip, AdamW),
  teacher: the teacher's forward under no_grad,
  kd:      one step exactly as the loop takes it (`distil.training.step.Stepper.step`: the engine, feature
           capture of both models, the KD loss, backward, clip, AdamW, schedule).
Goal: kd / (student + teacher) <= 1.10.

Part 2 (``--old-ref``): whole ``distil distill`` runs of one config by this checkout and by a git worktree of
an older commit, ``--pairs`` pairs in ABBA order; samples/s from each run's recipe (the training loop's
wall time). Goal: new / old >= 0.95.

    .venv/bin/python benchmarks/kd_overhead.py --config benchmarks/kd_overhead.yaml --old-ref 5182884
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from distil.config import build_run_config, read_yaml
from distil.models.loading import load_model, load_tokenizer
from distil.schema import from_dict
from distil.training import assembly
from distil.training.batches import StepBatch
from distil.training.optim import build_optimizer, build_scheduler, trainable_parameters
from distil.training.step import Stepper

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    """Benchmark settings."""

    teacher: str = "embedded"
    student_layers: int = 3
    batch_size: int = 32
    seq_length: int = 64
    repeats: int = 15
    warmup: int = 3
    threads: int = 2
    seed: int = 0
    kd: dict[str, float] = field(default_factory=lambda: {"temperature": 2.0, "alpha": 0.5})
    loop_steps: int = 20


def _write_data(folder: Path, cfg: BenchConfig, rows: int) -> Path:
    """Rows of random words, long enough that every row fills ``seq_length`` tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    words = ["the", "a", "of", "and", "to", "in", "is", "was", "film", "movie", "good", "bad", "great"]
    path = folder / "train.jsonl"
    with path.open("w") as handle:
        for _ in range(rows):
            text = " ".join(rng.choices(words, k=2 * cfg.seq_length))
            handle.write(json.dumps({"text": text, "label": rng.randint(0, 1)}) + "\n")
    return path


def _teacher(cfg: BenchConfig, folder: Path) -> Path:
    """The teacher with a (random) two-class head, saved: KD needs a sequence-classification teacher."""
    path = folder / "teacher"
    if not path.exists():
        torch.manual_seed(cfg.seed)
        load_model(cfg.teacher, head="seq", num_labels=2).save_pretrained(path)
        load_tokenizer(cfg.teacher).save_pretrained(path)
    return path


def _run_config(cfg: BenchConfig, folder: Path, steps: int) -> dict[str, Any]:
    """A KD run config both this and older versions of distil read (only long-standing keys)."""
    data = {
        "task": "custom",
        "train_file": str(_write_data(folder, cfg, cfg.batch_size * steps)),
        "text_columns": ["text"],
        "label_column": "label",
        "label_names": ["0", "1"],
        "max_length": cfg.seq_length,
        "group_by_length": False,
    }
    train = {
        "batch_size": cfg.batch_size,
        "max_steps": steps,
        "warmup_ratio": 0.0,
        "log_every": 10,
        "report_to": [],
        "seed": cfg.seed,
    }
    student = {"init": "layers", "num_layers": cfg.student_layers}
    return {
        "run_dir": str(folder / "run"),
        "models": {"teacher": str(_teacher(cfg, folder)), "student": student},
        "data": data,
        "train": train,
        "method": {"name": "kd", **cfg.kd},
    }


def part_one(cfg: BenchConfig, folder: Path) -> None:
    run_cfg = build_run_config(_run_config(cfg, folder, 1))
    prep = assembly.prepare(run_cfg, resume=False, overwrite=True)
    assembly.start(run_cfg, prep)
    mods = assembly.assemble(run_cfg, prep)
    scheduler = build_scheduler(mods.optimizer, 10**6, 0.0)
    stepper = Stepper(mods, prep.engine, prep.parts.method, prep.precision, scheduler, None, 1.0, prep.env)
    task = prep.parts.task
    batch = task.collate([task.train_set[i] for i in range(cfg.batch_size)])
    assert batch.input_ids.shape == (cfg.batch_size, cfg.seq_length), batch.input_ids.shape
    step_batch = StepBatch([batch], [1.0], 0, 0, False, cfg.batch_size)

    student = copy.deepcopy(mods.step.student).train()
    optimizer = build_optimizer(trainable_parameters([student]), run_cfg.train, fused=False)
    params = [p for p in student.parameters() if p.requires_grad]
    teacher = prep.parts.teacher
    assert teacher is not None
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.token_type_ids is not None:
        inputs["token_type_ids"] = batch.token_type_ids
    labels = batch.labels
    assert labels is not None

    def student_step() -> None:
        loss = F.cross_entropy(student(**inputs).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher(**inputs)

    def kd_step() -> None:
        terms = stepper.step(step_batch)
        float(terms["total"])  # the loop syncs once per log interval; here once per step, as a worst case

    cases: dict[str, Callable[[], None]] = {
        "student": student_step,
        "teacher": teacher_forward,
        "kd": kd_step,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for i in range(cfg.warmup + cfg.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if i >= cfg.warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"Part 1: batch {cfg.batch_size} x seq {cfg.seq_length}, {cfg.threads} threads, {cfg.repeats} repeats"
    )
    for name, values in times.items():
        print(f"  {name:<8} median {med[name]:8.1f} ms   min {min(values):8.1f}   max {max(values):8.1f}")
    ratio = med["kd"] / (med["student"] + med["teacher"])
    print(f"kd / (student + teacher) = {ratio:.3f}   (goal <= 1.10)")


def _loop_run(src: Path, config: Path) -> float:
    """Samples/s of one ``distil distill`` run by the distil under ``src``."""
    env = {
        **os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    }  # fmt: skip
    cmd = [sys.executable, "-m", "distil", "distill", "--config", str(config), "--no-progress", "--overwrite"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=src.parent)
    raw = yaml.safe_load(config.read_text())
    recipe = json.loads((Path(raw["run_dir"]) / "student" / "recipe.json").read_text())
    results = recipe["results"]
    return results["steps"] * raw["train"]["batch_size"] / results["train_seconds"]


def part_two(cfg: BenchConfig, folder: Path, old_ref: str, pairs: int) -> None:
    old_tree = folder / "old"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(old_tree), old_ref], check=True, capture_output=True)
    try:
        config = folder / "loop.yaml"
        config.write_text(yaml.safe_dump(_run_config(cfg, folder, cfg.loop_steps)))
        speeds: dict[str, list[float]] = {"old": [], "new": []}
        sources = {"old": old_tree / "src", "new": ROOT / "src"}
        for pair in range(pairs):  # ABBA order: neither version always runs first
            for name in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                speeds[name].append(_loop_run(sources[name], config))
        shape = f"batch {cfg.batch_size} x seq {cfg.seq_length}"
        print(f"Part 2: {cfg.loop_steps} steps of {shape}, one process, {pairs} pairs (old = {old_ref})")
        for name, values in speeds.items():
            print(f"  {name:<4} samples/s " + "  ".join(f"{v:6.2f}" for v in values))
        median = statistics.median(speeds["new"]) / statistics.median(speeds["old"])
        best = max(speeds["new"]) / max(speeds["old"])
        print(f"new / old throughput: medians {median:.3f}, best runs {best:.3f}   (goal >= 0.95)")
    finally:
        subprocess.run([*git, "remove", "--force", str(old_tree)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--old-ref", help="git commit of the older distil for part 2 (skipped without)")
    parser.add_argument("--pairs", type=int, default=4, help="part 2: (old, new) run pairs")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        part_one(cfg, Path(tmp) / "one")
        if args.old_ref:
            part_two(cfg, Path(tmp) / "two", args.old_ref, args.pairs)


if __name__ == "__main__":
    main()
