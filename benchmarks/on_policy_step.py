"""On-policy distillation step (GKD) on the engine against a hand-written floor doing the same work.

Both sides, on the same prompts, models and optimizer settings, interleaved within each repeat so machine
noise hits them alike:
  distil: one step exactly as the loop takes it (`distil.training.step.Stepper.step` with `distil.methods.gkd`
          at lmbda = 1: the student samples completions through transformers' ``generate`` with distil's
          per-row sampler, the teacher scores them, the chunked generalized JSD, backward, clip, AdamW);
  floor:  plain PyTorch and transformers: ``student.generate(do_sample=True)`` (transformers' own
          multinomial sampling), the same re-padding, the teacher's forward under no_grad, a direct JSD
          written out in full, backward, clip, AdamW, on a copy of the student.
Generated tokens are counted on both sides (random weights rarely emit the end token, so both generate
``max_new_tokens`` almost always). Goal: distil / floor <= 1.10.

    .venv/bin/python benchmarks/on_policy_step.py [--layers 4] [--width 256] [--batch 8] [--new 32]
    # on a GPU (benchmarks/gpu_check.sh): a ~0.9B Llama-style teacher -> 4 layers (~0.3B), bf16
    python benchmarks/on_policy_step.py --layers 16 --width 2048 --student-layers 4 --new 256 \
        --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distil.config import build_run_config
from distil.models.loading import load_tokenizer
from distil.training import assembly
from distil.training.batches import StepBatch
from distil.training.optim import build_optimizer, build_scheduler, trainable_parameters
from distil.training.step import Stepper
from distil.types import Runtime

ROOT = Path(__file__).resolve().parents[1]
CHAT = ROOT / "tests" / "assets" / "data" / "chat" / "chat.jsonl"


def _teacher(folder: Path, layers: int, width: int) -> Path:
    tokenizer = load_tokenizer("embedded")
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 8 // 3 // 8 * 8,
        num_hidden_layers=layers, num_attention_heads=width // 64, num_key_value_heads=width // 64,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _jsd(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD over the masked positions, written directly (the floor's loss)."""
    s = torch.log_softmax(student[mask].float(), -1)
    t = torch.log_softmax(teacher[mask].float(), -1)
    m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
    kl_t = (t.exp() * (t - m)).sum(-1)
    kl_s = (s.exp() * (s - m)).sum(-1)
    return (beta * kl_t + (1 - beta) * kl_s).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=32, help="max_new_tokens")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--student-layers", type=int, help="default: half the teacher's")
    parser.add_argument("--precision", choices=["fp32", "bf16-mixed"], default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    student_layers = args.student_layers or args.layers // 2
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = _teacher(Path(tmp) / "teacher", args.layers, args.width)
        raw = {
            "run_dir": str(Path(tmp) / "run"),
            "models": {
                "teacher": str(teacher_dir), "student": {"init": "layers", "num_layers": student_layers}
            },
            "data": {"task": "chat", "train_file": str(CHAT), "chat_template": "plain", "max_length": 96,
                     "group_by_length": False},
            "train": {"batch_size": args.batch, "max_steps": 1, "warmup_ratio": 0.0, "report_to": [],
                      "seed": 0, "precision": args.precision},
            "method": {"name": "gkd", "lmbda": 1.0, "max_new_tokens": args.new, "beta": 0.5},
        }  # fmt: skip
        run_cfg = build_run_config(raw)
        prep = assembly.prepare(run_cfg, resume=False, overwrite=True)
        assembly.start(run_cfg, prep)
        mods = assembly.assemble(run_cfg, prep)
        method = prep.parts.method
        method.attach(Runtime(seed=0, call_student=lambda fn: prep.engine.call_student(mods.wrapped, fn)))
        scheduler = build_scheduler(mods.optimizer, 10**6, 0.0)
        stepper = Stepper(mods, prep.engine, method, prep.precision, scheduler, None, 1.0, prep.env)
        task = prep.parts.task
        device = prep.env.device
        batch = task.collate([task.train_set[i] for i in range(args.batch)]).to(device)
        step_batch = StepBatch([batch], [1.0], 0, 0, False, args.batch)

        student = copy.deepcopy(mods.step.student).train()
        optimizer = build_optimizer(trainable_parameters([student]), run_cfg.train, fused=False)
        params = [p for p in student.parameters() if p.requires_grad]
        teacher = prep.parts.teacher
        assert teacher is not None and batch.prompt_lengths is not None
        pad = int(prep.parts.tokenizer.pad_token_id)
        lengths = batch.prompt_lengths.tolist()
        width = max(lengths)
        left = torch.full((args.batch, width), pad, device=device)
        left_mask = torch.zeros_like(left)
        for i, n in enumerate(lengths):
            left[i, width - n :] = batch.input_ids[i, :n]
            left_mask[i, width - n :] = 1
        counts: dict[str, list[int]] = {"distil": [], "floor": []}

        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")

        def floor_step() -> None:
            student.eval()
            with torch.no_grad(), autocast:
                out = student.generate(
                    input_ids=left, attention_mask=left_mask, do_sample=True, top_p=1.0, temperature=1.0,
                    max_new_tokens=args.new, pad_token_id=pad,
                )  # fmt: skip
            student.train()
            new = out[:, width:]
            counts["floor"].append(int(new.numel()))
            rows = [batch.input_ids[i, :n].tolist() + new[i].tolist() for i, n in enumerate(lengths)]
            ids = torch.full((args.batch, max(len(r) for r in rows)), pad)
            mask = torch.zeros_like(ids)
            scored = torch.zeros_like(ids, dtype=torch.bool)
            for i, (n, r) in enumerate(zip(lengths, rows, strict=True)):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
                scored[i, n - 1 : len(r) - 1] = True
            ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
            with torch.no_grad(), autocast:
                t = teacher(input_ids=ids, attention_mask=mask).logits
            with autocast:
                logits = student(input_ids=ids, attention_mask=mask).logits
            loss = _jsd(logits, t, scored, 0.5)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def distil_step() -> None:
            terms = stepper.step(step_batch)
            counts["distil"].append(round(float(terms["gen_tokens"]) * args.batch))
            method.steps_done += 1  # the loop's on_step_end: fresh seeds every step

        cases = {"distil": distil_step, "floor": floor_step}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(args.warmup + args.repeats):
            order = list(cases) if i % 2 == 0 else list(cases)[::-1]
            for name in order:
                start = time.perf_counter()
                cases[name]()
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
        print(
            f"On-policy step: Llama {args.layers} x {args.width} -> {student_layers} layers, "
            f"{args.precision}, {device.type}, vocabulary {teacher.config.vocab_size}, batch {args.batch}, "
            f"{args.new} new tokens, "
            f"{args.threads} threads, {args.repeats} repeats"
        )
        for name, values in times.items():
            tokens = statistics.mean(counts[name][args.warmup :])
            print(
                f"  {name:<7} median {statistics.median(values):8.1f} ms   min {min(values):8.1f}   "
                f"max {max(values):8.1f}   generated tokens/step {tokens:.1f}"
            )
        ratio = statistics.median(times["distil"]) / statistics.median(times["floor"])
        print(f"distil / floor = {ratio:.3f}   (goal <= 1.10)")


if __name__ == "__main__":
    main()
