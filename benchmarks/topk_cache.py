"""The top-k teacher cache of token-level KD: bytes per token, epoch-2 step time, and its KD loss against
the full-logit one at several k.

A small GPT-2-style teacher (random init, then ``distil finetune`` on the lm task over Wikipedia text for
``teacher_steps`` steps, so that its distributions are peaked like a real LM's) and its layer-initialised
student (``student_layers`` of its layers):

1. KD loss: on WikiText-2 test blocks, the full-logit KL (`distil.losses.kd_kl`) and the top-k one
   (`distil.losses.topk.topk_kd_kl`) of the same student, for each k; with the teacher's mean tail mass.
2. Step time and student: the same KD run for 2 epochs with and without the cache (k = ``run_k``), one
   after the other; the median samples/s of epoch 2 from each run's log (the cache is written before
   epoch 1 and read by both epochs), the epoch's mean loss terms, and each student's perplexity on
   ``dev_windows`` WikiText-2 test windows.

    .venv/bin/python benchmarks/topk_cache.py --config benchmarks/topk_cache.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distil.config import build_run_config, read_yaml
from distil.losses import kd_kl
from distil.losses.topk import topk_kd_kl
from distil.models.loading import load_model, load_tokenizer
from distil.plans import run
from distil.schema import from_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "text"


@dataclass
class BenchConfig:
    """Benchmark settings."""

    layers: int = 4
    width: int = 256
    heads: int = 4
    seq: int = 64
    batch: int = 16
    teacher_steps: int = 200
    student_layers: int = 2
    ks: list[int] = field(default_factory=lambda: [8, 32, 128, 512])
    eval_blocks: int = 64
    run_k: int = 32
    run_blocks: int = 256
    dev_windows: int = 512
    temperature: float = 1.0
    threads: int = 2
    seed: int = 0


def _lm(folder: Path, name: str, corpus: Path, cfg: BenchConfig, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_dir": str(folder / name),
        "data": {
            "task": "lm",
            "corpus": [str(corpus)],
            "max_length": cfg.seq,
            "cache_dir": str(folder / "cache"),
            **extra.pop("data", {}),
        },
        "train": {
            "batch_size": cfg.batch,
            "lr": 1e-3,
            "warmup_ratio": 0.05,
            "log_every": 1,
            "report_to": [],
            "seed": cfg.seed,
            **extra.pop("train", {}),
        },
        "method": {"name": kind, **extra.pop("method", {})},
        **extra,
    }


def _teacher(cfg: BenchConfig, folder: Path) -> Path:
    tokenizer = load_tokenizer("embedded")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=cfg.width,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        n_positions=cfg.seq,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    GPT2LMHeadModel(config).save_pretrained(folder / "init")
    tokenizer.save_pretrained(folder / "init")
    corpus = SHARED / "enwiki-2015-wikiextractor" / "train"
    raw = _lm(
        folder,
        "teacher",
        corpus,
        cfg,
        "finetune",
        data={"max_blocks": cfg.batch * cfg.teacher_steps},
        train={"max_steps": cfg.teacher_steps},
        models={"teacher": None, "student": {"init": "pretrained", "path": str(folder / "init")}},
    )
    run(build_run_config(raw), progress=False)
    return folder / "teacher" / "student"


def _loss_table(cfg: BenchConfig, teacher_dir: Path, folder: Path) -> list[str]:
    from distil.models.students import student_from_layers
    from distil.tasks import LMData, LMTask

    teacher = load_model(str(teacher_dir), head="lm").eval()
    student = student_from_layers(teacher, list(range(1, cfg.student_layers + 1))).eval()
    text = SHARED / "wikitext-2-raw" / "wiki.test.hf-rows-joined.txt"
    task = LMTask(
        LMData(
            task="lm",
            corpus=[str(text)],
            max_length=cfg.seq,
            cache_dir=str(folder / "cache"),
            max_blocks=cfg.eval_blocks,
        ),
        cfg.seed,
    )
    task.prepare(load_tokenizer(str(teacher_dir)), cfg.seq)
    batch = task.collate([task.train_set[i] for i in range(len(task.train_set))])
    with torch.no_grad():
        t = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
        s = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    mask = batch.labels != -100
    full = float(kd_kl(s, t, cfg.temperature, mask))
    vocab = t.shape[-1]
    lines = [
        f"KD loss on {len(task.train_set)} WikiText-2 test blocks of {cfg.seq} tokens (student: "
        f"{cfg.student_layers} teacher layers, untrained), T = {cfg.temperature}: full-logit KL {full:.5f}",
        "",
        "| k | bytes / token | teacher tail mass (mean) | top-k KL | top-k / full |",
        "|---|---|---|---|---|",
    ]
    for k in [*cfg.ks, vocab]:
        values, index = t.topk(min(k, vocab), dim=-1)
        rest = torch.logsumexp(t.scatter(-1, index, float("-inf")) / cfg.temperature, dim=-1)
        tempered = torch.logsumexp(t / cfg.temperature, -1)
        tail = float((rest - tempered).exp()[mask].mean()) if k < vocab else 0.0
        value = float(topk_kd_kl(s, index, values, rest, cfg.temperature, mask))
        lines.append(
            f"| {k if k < vocab else f'{vocab} (all)'} | {8 * min(k, vocab) + 4} | {tail:.4f} | "
            f"{value:.5f} | {value / full:.4f} |"
        )
    return lines


def _epoch_two(folder: Path) -> dict[str, float]:
    """Median samples/s of epoch 2, and its mean KD and next-token losses (one record a step)."""
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    second = [r for r in records if r.get("epoch") == 1.0 and "samples_per_s" in r]
    return {
        "samples_per_s": statistics.median(r["samples_per_s"] for r in second),
        "kd": statistics.fmean(r["loss/kd"] for r in second),
        "next_token": statistics.fmean(r["loss/task"] for r in second),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        teacher = _teacher(cfg, folder)
        print(
            f"teacher: {cfg.layers} x {cfg.width} GPT-2, {cfg.teacher_steps} steps "
            f"({time.perf_counter() - start:.0f} s)"
        )
        print("\n".join(_loss_table(cfg, teacher, folder)))
        corpus = SHARED / "enwiki-2015-wikiextractor" / "valid"
        speeds = {}
        for name, k in (("no cache", None), (f"top-{cfg.run_k} cache", cfg.run_k)):
            raw = _lm(
                folder,
                f"kd-{k}",
                corpus,
                cfg,
                "kd",
                data={
                    "max_blocks": cfg.run_blocks,
                    "dev_file": str(SHARED / "wikitext-2-raw" / "wiki.test.hf-rows-joined.txt"),
                    "eval_stride": cfg.seq,
                    "dev_subset": cfg.dev_windows,
                },
                train={"epochs": 2, "cache_teacher_topk": k},
                method={"temperature": cfg.temperature},
                models={
                    "teacher": str(teacher),
                    "student": {"init": "layers", "num_layers": cfg.student_layers},
                },
            )
            result = run(build_run_config(raw), progress=False)
            speeds[name] = _epoch_two(folder / f"kd-{k}") | {"perplexity": result.metrics["perplexity"]}
        print(f"\nKD, 2 epochs of {cfg.run_blocks} blocks, batch {cfg.batch} x {cfg.seq}, epoch 2:")
        for name, r in speeds.items():
            print(
                f"  {name}: median {r['samples_per_s']:.1f} samples/s, mean KD term {r['kd']:.4f}, mean "
                f"next-token loss {r['next_token']:.4f}; student's perplexity {r['perplexity']:.1f} on "
                f"{cfg.dev_windows} WikiText-2 test windows"
            )
        ratio = speeds["no cache"]["samples_per_s"] / speeds[f"top-{cfg.run_k} cache"]["samples_per_s"]
        print(f"  cached / uncached step time = {ratio:.3f}")


if __name__ == "__main__":
    main()
