"""GPU check: distil's training step beside a plain PyTorch floor, as samples/s and peak memory.

Three cases, random-weight models built from configs (no downloads), each run twice in fresh processes:
``floor`` (hand-written PyTorch: the teacher's no-grad forward + the student's forward, loss, backward and
fused AdamW step, under the same autocast) and ``distil`` (the modules `distil.training.assembly` builds
for ``distil distill`` and the loop's own `distil.training.step.Stepper.step`).

- ``kd_llama_bf16``: token-level KD, a Llama-style ~1.1B teacher (TinyLlama's shape) into a ~0.3B student
  (4 of its layers), sequence 1024, ``bf16-mixed``.
- ``minilmv2_bert_base``: MiniLMv2 from a BERT-base-sized teacher into a 6 x 384 student, batch 32 x 512,
  ``bf16-mixed``.
- ``kd_bert_fp16``: classification KD from a BERT-base-sized teacher into 6 of its layers, batch 32 x 128,
  ``fp16-mixed`` (on a CPU, where float16 training is refused, ``bf16-mixed`` stands in).

``--size tiny`` shrinks every model and batch so the script can be checked on a CPU for syntax and shapes.
`benchmarks/gpu_check.sh` runs the whole check; this file is its worker.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    LlamaConfig,
    PreTrainedModel,
)

from distil.config import build_run_config
from distil.data.batching import row_lengths
from distil.training import assembly
from distil.training.batches import StepSchedule, step_loader
from distil.training.step import Stepper

VOCAB = 32000


@dataclass(frozen=True)
class Case:
    """One check: the teacher's family and sizes, the student, the data shape, method and precision."""

    family: str
    teacher: dict[str, int]
    student: dict[str, Any]
    batch: int
    seq: int
    method: dict[str, Any]
    task: str
    precision: str


def _cases(tiny: bool) -> dict[str, Case]:
    if tiny:
        llama = {"hidden_size": 64, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate_size": 128}
        bert = {"hidden_size": 64, "layers": 4, "heads": 4, "intermediate_size": 128}
        mini = {"init": "config", "num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64}
        return {
            "kd_llama_bf16": Case(
                "llama", llama, {"init": "layers", "num_layers": 2}, 2, 32, {"name": "kd"}, "lm", "bf16-mixed"
            ),
            "minilmv2_bert_base": Case(
                "bert", bert, mini, 4, 32, {"name": "minilmv2", "relation_heads": 4}, "corpus", "bf16-mixed"
            ),
            "kd_bert_fp16": Case(
                "bert",
                bert,
                {"init": "layers", "num_layers": 2},
                4,
                16,
                {"name": "kd"},
                "custom",
                "fp16-mixed",
            ),
        }
    llama = {"hidden_size": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "intermediate_size": 5632}
    bert = {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072}
    mini = {"init": "config", "num_layers": 6, "hidden_size": 384, "num_heads": 12, "intermediate_size": 1536}
    return {
        "kd_llama_bf16": Case(
            "llama", llama, {"init": "layers", "num_layers": 4}, 8, 1024, {"name": "kd"}, "lm", "bf16-mixed"
        ),
        "minilmv2_bert_base": Case(
            "bert", bert, mini, 32, 512, {"name": "minilmv2", "relation_heads": 48}, "corpus", "bf16-mixed"
        ),
        "kd_bert_fp16": Case(
            "bert", bert, {"init": "layers", "num_layers": 6}, 32, 128, {"name": "kd"}, "custom", "fp16-mixed"
        ),
    }


def _tokenizer() -> BertTokenizerFast:
    """A word-level tokenizer over ``VOCAB`` made-up words (each one token), built offline."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + [f"w{i}" for i in range(VOCAB - len(specials))]
    # transformers 5 builds a fast WordPiece tokenizer from a vocabulary dict (a vocab_file is ignored).
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


def prepare(case: Case, work: Path, seed: int = 0) -> None:
    """Save the random teacher (bfloat16, as a big checkpoint would be) and the case's text data."""
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    t = case.teacher
    torch.manual_seed(seed)
    if case.family == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB, hidden_size=t["hidden_size"], num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"],
            intermediate_size=t["intermediate_size"], max_position_embeddings=case.seq, pad_token_id=0,
            tie_word_embeddings=False,
        )  # fmt: skip
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config)
    else:
        config = BertConfig(
            vocab_size=VOCAB, hidden_size=t["hidden_size"], num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"], intermediate_size=t["intermediate_size"],
            max_position_embeddings=max(512, case.seq), num_labels=2,
        )  # fmt: skip
        cls = AutoModelForSequenceClassification if case.task == "custom" else AutoModel
        model = cls.from_config(config)
    model.to(torch.bfloat16).save_pretrained(work / "teacher")
    tokenizer.save_pretrained(work / "teacher")
    rng = random.Random(seed)
    rows = case.batch * 40
    if case.task == "custom":
        with (work / "train.jsonl").open("w") as handle:
            for _ in range(rows):
                text = " ".join(f"w{rng.randrange(VOCAB - 5)}" for _ in range(case.seq))
                handle.write(json.dumps({"text": text, "label": rng.randint(0, 1)}) + "\n")
    else:
        words = (f"w{rng.randrange(VOCAB - 5)}" for _ in range(rows * case.seq))
        (work / "text.txt").write_text(" ".join(words) + "\n")


def _run_config(case: Case, work: Path) -> dict[str, Any]:
    data: dict[str, Any] = {"task": case.task, "max_length": case.seq}
    if case.task == "custom":
        data |= {"train_file": str(work / "train.jsonl"), "text_columns": ["text"], "label_column": "label",
                 "label_names": ["0", "1"], "group_by_length": False}  # fmt: skip
    else:
        data |= {"corpus": [str(work / "text.txt")], "cache_dir": str(work / "cache")}
    return {
        "run_dir": str(work / "run"),
        "models": {"teacher": str(work / "teacher"), "student": case.student},
        "data": data,
        "train": {
            "batch_size": case.batch,
            "max_steps": 1000,
            "precision": case.precision,
            "report_to": [],
        },
        "method": case.method,
    }


def _precision(case: Case) -> str:
    return case.precision if torch.cuda.is_available() or case.precision != "fp16-mixed" else "bf16-mixed"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> float:
    """Peak memory: CUDA's allocated bytes on a GPU, the process's resident set on a CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(case: Case, impl: str, work: Path, steps: int, warmup: int) -> dict[str, Any]:
    """Time ``steps`` steps after ``warmup``: the distil step or the floor, on the same batches."""
    raw = _run_config(case, work)
    raw["train"]["precision"] = _precision(case)
    cfg = build_run_config(raw)
    prep = assembly.prepare(cfg, resume=False, overwrite=True)
    assembly.start(cfg, prep)
    task = prep.parts.task
    schedule = StepSchedule(row_lengths(task.train_set), case.batch, prep.env.world, 1, 0, False)
    batches = list(step_loader(schedule, task.train_set, task.collate, rank=0, start=(0, 0),
                               steps=steps + warmup, workers=0, pin_memory=False))  # fmt: skip
    if impl == "distil":
        mods = assembly.assemble(cfg, prep)
        scheduler = torch.optim.lr_scheduler.LambdaLR(mods.optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler(prep.env.device.type) if prep.precision.scaled else None
        stepper = Stepper(
            mods, prep.engine, prep.parts.method, prep.precision, scheduler, scaler, 1.0, prep.env
        )

        def step(i: int) -> None:
            stepper.step(batches[i])
    else:
        step = _floor(prep, case, batches)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup):
        step(i)
    _sync()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync()
    seconds = time.perf_counter() - start
    return {
        "impl": impl,
        "precision": prep.precision.name,
        "samples_per_s": steps * case.batch / seconds,
        "peak_gib": _peak_gib(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _floor(prep: Any, case: Case, batches: list[Any]) -> Any:
    """Plain PyTorch: teacher forward without gradient, student forward, loss, backward, fused AdamW."""
    device, precision = prep.env.device, prep.precision
    teacher = prep.parts.teacher.to(device).eval()
    student = copy.deepcopy(prep.parts.student).to(device=device, dtype=precision.param_dtype).train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type) if precision.scaled else None
    dtype = precision.compute_dtype or torch.float32

    def inputs(batch: Any) -> dict[str, torch.Tensor]:
        found = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        return {k: v.to(device, non_blocking=True) for k, v in found.items()}

    def output(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(**batch)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state

    def step(i: int) -> None:
        batch = inputs(batches[i].micro[0])
        with torch.autocast(device.type, dtype=dtype, enabled=precision.mixed):
            with torch.no_grad():
                t = output(teacher, batch)
            s = output(student, batch)
            if s.shape == t.shape:  # the same outputs: a plain KL (softmax in float32)
                loss = F.kl_div(F.log_softmax(s.float(), -1), F.softmax(t.float(), -1), reduction="batchmean")
            else:  # MiniLMv2's widths differ: a stand-in loss on the student's output
                loss = s.float().pow(2).mean() + 0 * t.float().mean()
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def report(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print(f"{'case':<20}{'impl':<8}{'precision':<12}{'samples/s':>12}{'peak GiB':>10}")
    by_case: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
        print(
            f"{r['case']:<20}{r['impl']:<8}{r['precision']:<12}{r['samples_per_s']:12.2f}{r['peak_gib']:10.2f}"
        )
    for name, pair in by_case.items():
        if {"floor", "distil"} <= set(pair):
            speed = pair["distil"]["samples_per_s"] / pair["floor"]["samples_per_s"]
            memory = pair["distil"]["peak_gib"] / pair["floor"]["peak_gib"]
            print(f"{name}: distil / floor throughput {speed:.3f}, peak memory {memory:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare", "run", "report"])
    parser.add_argument("--case")
    parser.add_argument("--impl", choices=["floor", "distil"])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    if args.action == "report":
        report(args.results)
        return
    case = _cases(args.size == "tiny")[args.case]
    work = args.work / args.case
    if args.action == "prepare":
        prepare(case, work)
        return
    result = {"case": args.case, "size": args.size} | run(case, args.impl, work, args.steps, args.warmup)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
