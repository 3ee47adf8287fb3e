"""Every method's training step as the loop takes it, against a hand-written floor for the same work.

For each registered method: the embedded teacher (all-MiniLM-L6-v2) and its 3-layer student on a labelled
task (task methods), or a 6 x 192 student on corpus blocks (task-agnostic methods); one fixed batch.
``distil`` is `distil.training.step.Stepper.step` on the modules `distil.training.assembly` builds for
``distil distill``; ``floor`` is `benchmarks/floor_losses.py`'s plain PyTorch for the same models and loss.
The two alternate within each repeat (and the methods one after the other); medians are compared.
Goal: every method <= 1.10 x its floor (MiniLMv2 and MiniLM <= 1.15 x).

    .venv/bin/python benchmarks/floor.py --config benchmarks/floor.yaml
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForMaskedLM, BertConfig

from distil.config import RunConfig, build_run_config, read_yaml
from distil.data.batching import row_lengths
from distil.methods import METHODS
from distil.models.loading import load_model, load_tokenizer
from distil.schema import from_dict
from distil.training import assembly
from distil.training.batches import StepBatch, StepSchedule, step_loader
from distil.training.step import Stepper

sys.path.insert(0, str(Path(__file__).parent))
from floor_losses import FLOORS, PEERS

GOAL = {"minilm": 1.15, "minilmv2": 1.15}
TASK_AGNOSTIC = ("minilm", "minilmv2", "distilbert", "homodistil", "homodistil_head")
# Methods whose step needs more than one batch of one task, measured by a benchmark of their own.
OWN_BENCHMARK = {"gkd": "benchmarks/on_policy_step.py (generation, teacher, student step)"}


@dataclass
class BenchConfig:
    """Benchmark settings; ``tiny`` replaces the embedded teacher by a 2 x 32 one (the test suite's)."""

    task_batch: int = 32
    task_seq: int = 64
    corpus_batch: int = 32
    corpus_seq: int = 128
    repeats: int = 15
    warmup: int = 3
    threads: int = 2
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: [m for m in METHODS if m not in OWN_BENCHMARK])
    tiny: bool = False


def _teachers(cfg: BenchConfig, folder: Path) -> dict[str, Path]:
    """The teacher with a random 2-class head, and with a random MLM head (saved as such)."""
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(cfg.seed)
    if cfg.tiny:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
            num_labels=2,
        )
        from transformers import AutoModel, AutoModelForSequenceClassification

        AutoModel.from_config(config).save_pretrained(folder / "base")
        tokenizer.save_pretrained(folder / "base")
        seq = AutoModelForSequenceClassification.from_config(config)
        mlm = AutoModelForMaskedLM.from_config(config)
    else:
        seq = load_model("embedded", head="seq", num_labels=2)
        mlm = load_model("embedded", head="mlm")
    out = {}
    for name, model in (("seq", seq), ("mlm", mlm)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        out[name] = folder / name
    return out


def _data(cfg: BenchConfig, folder: Path) -> tuple[Path, Path]:
    rng = random.Random(cfg.seed)
    words = ["the", "a", "film", "story", "market", "team", "research", "good", "bad", "very", "new", "city"]
    task = folder / "task.jsonl"
    with task.open("w") as handle:
        for _ in range(cfg.task_batch * 2):
            text = " ".join(rng.choices(words, k=2 * cfg.task_seq))
            handle.write(json.dumps({"text": text, "label": rng.randint(0, 1)}) + "\n")
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(rng.choices(words, k=cfg.corpus_batch * cfg.corpus_seq * 3)) + "\n")
    return task, corpus


def _run_config(method: str, cfg: BenchConfig, folder: Path, teachers: dict[str, Path]) -> dict[str, Any]:
    task_file, corpus = (
        _data(cfg, folder)
        if not (folder / "task.jsonl").exists()
        else (folder / "task.jsonl", folder / "corpus.txt")
    )
    agnostic = method in TASK_AGNOSTIC
    width = 16 if cfg.tiny else 192
    student: dict[str, Any] = {"init": "layers", "num_layers": 1 if cfg.tiny else 3}
    spec: dict[str, Any] = {"name": method}
    teacher = teachers["seq"]
    if agnostic:
        heads = 4 if cfg.tiny else 12
        student = {
            "init": "config",
            "num_layers": 1 if cfg.tiny else 6,
            "hidden_size": width,
            "num_heads": heads,
            "intermediate_size": 4 * width,
        }
        teacher = (
            teachers["mlm"] if method in ("distilbert", "homodistil", "homodistil_head") else teachers["seq"]
        )
        if method in ("homodistil", "homodistil_head"):
            student = {"init": "copy"}
        data: dict[str, Any] = {
            "task": "corpus",
            "corpus": [str(corpus)],
            "max_length": cfg.corpus_seq,
            "cache_dir": str(folder / "cache"),
        }
        batch = cfg.corpus_batch
    else:
        data = {
            "task": "custom",
            "train_file": str(task_file),
            "text_columns": ["text"],
            "label_column": "label",
            "label_names": ["0", "1"],
            "max_length": cfg.task_seq,
            "group_by_length": False,
        }
        batch = cfg.task_batch
    if method == "minilmv2":
        spec["relation_heads"] = 8 if cfg.tiny else 48
    if method == "ted_filters":
        spec["layer_map"] = "uniform"
    if method == "homodistil":
        spec |= {"t_i": 1, "t_f": 10**6, "delta_t": 1}  # pruning scores every step, widths never reached
    return {
        "run_dir": str(folder / f"run-{method}"),
        "models": {"teacher": str(teacher), "student": student},
        "data": data,
        "train": {"batch_size": batch, "max_steps": 10**6, "report_to": [], "seed": cfg.seed},
        "eval": {"select": "last"},
        "method": spec,
        "plan": {"name": "single"},
    }


def prepared(run_cfg: RunConfig) -> tuple[assembly.Prepared, StepBatch]:
    """The run as ``distil distill`` prepares it (nothing trained yet), and its first global batch."""
    prep = assembly.prepare(run_cfg, resume=False, overwrite=True)
    assembly.start(run_cfg, prep)
    task = prep.parts.task
    schedule = StepSchedule(
        row_lengths(task.train_set), run_cfg.train.batch_size, 1, 1, run_cfg.train.seed, False
    )
    loader = step_loader(
        schedule, task.train_set, task.collate, rank=0, start=(0, 0), steps=1, workers=0, pin_memory=False
    )
    return prep, next(iter(loader))


def loop_stepper(run_cfg: RunConfig, prep: assembly.Prepared) -> tuple[assembly.Modules, Stepper]:
    """The loop's modules and its step for a prepared run (constant learning rate, no clipping)."""
    mods = assembly.assemble(run_cfg, prep)
    scheduler = torch.optim.lr_scheduler.LambdaLR(mods.optimizer, lambda _: 1.0)
    stepper = Stepper(mods, prep.engine, prep.parts.method, prep.precision, scheduler, None, 1.0, prep.env)
    return mods, stepper


def alternating_medians(
    steps: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median milliseconds of each step, the steps alternating in order and reversed from repeat to repeat."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name in list(steps) if i % 2 == 0 else list(steps)[::-1]:
            start = time.perf_counter()
            steps[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def loop_stepping(raw: dict[str, Any], steps_first: int = 0) -> tuple[Callable[[], float], Any]:
    """One loop step of the run ``raw`` on one fixed batch, as the loop takes it with its method's
    ``on_step_end`` (prune events), after ``steps_first`` such steps; returns the step and the method.

    Each call returns the seconds spent after the optimizer step: ``on_step_end`` and a resize.
    """
    run_cfg = build_run_config(raw)
    prep, batch = prepared(run_cfg)
    mods, stepper = loop_stepper(run_cfg, prep)
    method = prep.parts.method
    done = 0

    def step() -> float:
        nonlocal done
        float(stepper.step(batch)["total"])  # synchronised, as a log step is
        done += 1
        start = time.perf_counter()
        change = method.on_step_end(done)
        if change is not None:
            assembly.resize(mods, prep.engine, change)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(steps_first):
        step()
    return step, method


def _pair(
    method: str, cfg: BenchConfig, folder: Path, teachers: dict[str, Path]
) -> dict[str, Callable[[], None]]:
    """The distil step and the floor of ``method`` on one fixed batch."""
    run_cfg = build_run_config(_run_config(method, cfg, folder, teachers))
    prep, step_batch = prepared(run_cfg)
    micro = step_batch.micro[0]
    inputs = {"input_ids": micro.input_ids, "attention_mask": micro.attention_mask}
    if micro.token_type_ids is not None:
        inputs["token_type_ids"] = micro.token_type_ids
    if micro.labels is not None and not method.startswith(("minilm", "distilbert", "homodistil")):
        inputs["labels"] = micro.labels
    floor = FLOORS[method](prep.parts, inputs)  # from the models as built, before the engine moves them
    peer = PEERS[method][1](prep.parts, inputs) if method in PEERS else None
    _, stepper = loop_stepper(run_cfg, prep)

    def distil_step() -> None:
        float(stepper.step(step_batch)["total"])  # synchronised, as a log step is

    return {"distil": distil_step, "floor": floor} | ({"peer": peer} if peer is not None else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--json", help="Also write the medians and ratios to this file.")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teachers = _teachers(cfg, folder)
        for method in cfg.methods:
            med = alternating_medians(_pair(method, cfg, folder, teachers), cfg.warmup, cfg.repeats)
            results[method] = {
                "distil_ms": med["distil"],
                "floor_ms": med["floor"],
                "ratio": med["distil"] / med["floor"],
                "goal": GOAL.get(method, 1.10),
            }
            if "peer" in med:
                results[method] |= {"peer_ms": med["peer"], "peer_ratio": med["distil"] / med["peer"]}
            r = results[method]
            verdict = "met" if r["ratio"] <= r["goal"] else "NOT met"
            print(
                f"{method:<20} distil {r['distil_ms']:8.1f} ms   floor {r['floor_ms']:8.1f} ms   "
                f"method step / floor = {r['ratio']:.3f}   (goal <= {r['goal']:.2f}: {verdict})",
                flush=True,
            )
            if "peer" in med:
                print(
                    f"{'':<20} {PEERS[method][0]}: {r['peer_ms']:8.1f} ms   distil / peer = "
                    f"{r['peer_ratio']:.3f}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": cfg.__dict__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
