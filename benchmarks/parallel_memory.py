"""Per-process memory of DDP against FSDP2 on 2 CPU processes, for a Llama-style teacher and student.

The teacher (random weights, built from a config) and its layer-initialised student train with token-level
KD on the ``lm`` task, as ``distil distill`` runs it (the loop's own `_prepare`, `_assemble` and
`_Stepper.step`). Each process measures, for real, the bytes it holds of:
  student:   the student's (and the method's) parameters,
  gradients: the gradients present just before the first optimiser step,
  optimizer: AdamW's state after it,
  teacher:   the frozen teacher's parameters,
local shards under FSDP, and its peak resident memory (which also counts activations, the Python
runtime, libraries, FSDP's transient all-gathers and allocator slack; "RSS loaded" is the high-water mark
once the modules are assembled: what loading cost). Goal: FSDP per process <= 0.55 x DDP (student +
gradients + optimizer + teacher).

    .venv/bin/python benchmarks/parallel_memory.py --config benchmarks/parallel_memory.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from distil.config import build_run_config, read_yaml
from distil.data.batching import row_lengths
from distil.models.loading import load_tokenizer
from distil.schema import from_dict
from distil.training import assembly
from distil.training.batches import StepSchedule, step_loader
from distil.training.engines import base as engine_base
from distil.training.engines import state_bytes
from distil.training.step import Stepper


@dataclass
class BenchConfig:
    """Benchmark settings (the teacher's sizes; the student keeps ``student_layers`` of its layers)."""

    hidden_size: int = 1024
    layers: int = 8
    heads: int = 16
    kv_heads: int = 4
    intermediate_size: int = 2816
    student_layers: int = 4
    batch_size: int = 2
    seq_length: int = 128
    steps: int = 2
    seed: int = 0


def _setup(cfg: BenchConfig, folder: Path) -> None:
    """The teacher (saved with the embedded teacher's tokenizer) and a text file to train on."""
    tokenizer = load_tokenizer("embedded")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.seq_length,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    LlamaForCausalLM(config).save_pretrained(folder / "teacher")
    tokenizer.save_pretrained(folder / "teacher")
    rng = random.Random(cfg.seed)
    words = ["the", "a", "of", "and", "model", "student", "teacher", "memory", "shard", "process", "layer"]
    lines = (" ".join(rng.choices(words, k=60)) for _ in range(cfg.batch_size * 2 * cfg.steps * 4))
    (folder / "text.txt").write_text("\n".join(lines) + "\n")


MODES = ("ddp", "fsdp", "fsdp-rank0")  # fsdp-rank0: engine.ram_efficient_loading (process 0 reads weights)


def _run_config(cfg: BenchConfig, folder: Path, mode: str) -> dict[str, Any]:
    parallel = mode.removesuffix("-rank0")
    return {
        "run_dir": str(folder / f"run-{mode}"),
        "models": {
            "teacher": str(folder / "teacher"),
            "student": {"init": "layers", "num_layers": cfg.student_layers},
        },
        "data": {
            "task": "lm",
            "corpus": [str(folder / "text.txt")],
            "max_length": cfg.seq_length,
            "cache_dir": str(folder / "cache"),
        },
        "train": {"batch_size": cfg.batch_size, "max_steps": cfg.steps, "report_to": [], "seed": cfg.seed},
        "engine": {"name": parallel, **({"ram_efficient_loading": True} if mode.endswith("-rank0") else {})},
        "method": {"name": "kd"},
    }


def worker(cfg: BenchConfig, folder: Path, mode: str) -> None:
    """One process of a 2-process run: train ``cfg.steps`` steps and write what this process held."""
    run_cfg = build_run_config(_run_config(cfg, folder, mode))
    prep = assembly.prepare(run_cfg, resume=False, overwrite=True)
    assembly.start(run_cfg, prep)
    mods = assembly.assemble(run_cfg, prep)
    report: dict[str, Any] = {"parallel": prep.engine.name, "rank": prep.env.rank}
    report["peak_rss_loaded"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    real_step = engine_base.optimizer_step

    def measuring_step(optimizer: Any, scheduler: Any, params: list[Any], **kwargs: Any) -> bool:
        if "gradients" not in report:  # the first step: gradients exist now, optimizer state after it
            report["gradients"] = state_bytes(p.grad for p in params if p.grad is not None)
        stepped = real_step(optimizer, scheduler, params, **kwargs)
        if "optimizer" not in report:
            state = [t for s in optimizer.state.values() for k, t in s.items() if k != "step"]
            report["optimizer"] = state_bytes(state)
        return stepped

    engine_base.optimizer_step = measuring_step  # type: ignore[assignment]
    scheduler = torch.optim.lr_scheduler.LambdaLR(mods.optimizer, lambda _: 1.0)
    stepper = Stepper(mods, prep.engine, prep.parts.method, prep.precision, scheduler, None, 1.0, prep.env)
    task = prep.parts.task
    schedule = StepSchedule(
        row_lengths(task.train_set), cfg.batch_size, prep.env.world, 1, cfg.seed, task.group_by_length
    )
    loader = step_loader(
        schedule, task.train_set, task.collate, rank=prep.env.rank, start=(0, 0), steps=cfg.steps, workers=0,
        pin_memory=False,
    )  # fmt: skip
    for step_batch in loader:
        stepper.step(step_batch)
    report["student"] = state_bytes(mods.step.parameters())
    report["teacher"] = state_bytes(mods.teacher.parameters())
    report["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (folder / f"memory-{mode}-{prep.env.rank}.json").write_text(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "PARALLEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    if args.worker:
        worker(cfg, Path(args.worker[0]), args.worker[1])
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _setup(cfg, folder)
        for mode in MODES:  # one after the other: one CPU-heavy job at a time
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   __file__, "--worker", str(folder), mode]  # fmt: skip
            if args.config:
                cmd += ["--config", args.config]
            subprocess.run(cmd, check=True, env=env, capture_output=True)
        reports = {
            m: [json.loads((folder / f"memory-{m}-{r}.json").read_text()) for r in (0, 1)] for m in MODES
        }
    print(f"Settings: {yaml.safe_dump(asdict(cfg), default_flow_style=True).strip()}")
    parts = ("student", "gradients", "optimizer", "teacher")
    header = "".join(f"{p:>12}" for p in parts) + f"{'sum':>12}{'RSS loaded':>12}{'peak RSS':>12}   (MiB)"
    print(f"{'':<14}{header}")
    sums: dict[str, float] = {}
    for mode, ranks in reports.items():
        for report in ranks:
            assert report["parallel"] == mode.removesuffix("-rank0"), report
            local = [report[p]["local"] / 2**20 for p in parts]
            rss = report["peak_rss"] / 2**20
            loaded = report["peak_rss_loaded"] / 2**20
            sums[mode] = max(sums.get(mode, 0.0), sum(local))
            label = f"{mode} r{report['rank']}"
            print(
                f"{label:<14}"
                + "".join(f"{v:12.1f}" for v in local)
                + f"{sum(local):12.1f}{loaded:12.1f}{rss:12.1f}"
            )
    full = reports["ddp"][0]
    print("full sizes: " + ", ".join(f"{p} {full[p]['full'] / 2**20:.1f} MiB" for p in parts))
    print(f"FSDP / DDP per process (largest rank, student + gradients + optimizer + teacher) = "
          f"{sums['fsdp'] / sums['ddp']:.3f}   (goal <= 0.55)")  # fmt: skip


if __name__ == "__main__":
    main()
