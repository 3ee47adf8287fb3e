"""KD step time over (student training step + teacher no-grad forward), measured side by side.

The three cases run on the same batch, interleaved within each repeat so machine noise hits them alike:
  student: forward + backward + clip + AdamW step of the student alone (task loss),
  teacher: the teacher's forward pass under no_grad,
  kd:      one KD step as the loop runs it (feature capture of both models, KD loss, backward, clip, step).
The goal of issue 2 is kd / (student + teacher) <= 1.10. A fourth case, kd with cached teacher logits
(train.cache_teacher), is reported against the student step alone.

    .venv/bin/python benchmarks/kd_overhead.py --config benchmarks/kd_overhead.yaml
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from distil.adapters import forward_features
from distil.config import TrainConfig, read_yaml
from distil.losses import task_loss
from distil.methods import MethodContext
from distil.methods.kd import KD, KDConfig
from distil.models.layer_maps import paper_layer_map
from distil.models.loading import freeze, load_model
from distil.models.students import student_from_layers
from distil.schema import from_dict
from distil.training.optim import build_optimizer, trainable_parameters
from distil.types import FeatureRequest, Features


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


def _batch(cfg: BenchConfig, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(1000, vocab, (cfg.batch_size, cfg.seq_length), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.randint(0, 2, (cfg.batch_size,), generator=g),
        "idx": torch.arange(cfg.batch_size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teacher = freeze(load_model(cfg.teacher, head="seq", num_labels=2))
    layers = paper_layer_map(teacher.config.num_hidden_layers, cfg.student_layers)
    student = student_from_layers(teacher, layers).train()
    method = KD(KDConfig(**cfg.kd), MethodContext(student, teacher, is_regression=False, num_labels=2))
    optimizer = build_optimizer(trainable_parameters([student]), TrainConfig())
    params = [p for p in student.parameters() if p.requires_grad]
    batch = _batch(cfg, teacher.config.vocab_size)
    request = FeatureRequest(logits=True)
    with torch.no_grad():
        cached = Features(
            attention_mask=batch["attention_mask"],
            logits=teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits,
        )

    def optimise(loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def student_step() -> None:
        feats = forward_features(student, batch, request)
        optimise(task_loss(feats.logits, batch["labels"], False))

    def teacher_forward() -> None:
        with torch.no_grad():
            forward_features(teacher, batch, request)

    def kd_step() -> None:
        feats = forward_features(student, batch, request)
        with torch.no_grad():
            t = forward_features(teacher, batch, request)
        optimise(method.loss(batch, feats, t).total)

    def kd_cached_step() -> None:
        feats = forward_features(student, batch, request)
        optimise(method.loss(batch, feats, cached).total)

    cases: dict[str, Callable[[], None]] = {
        "student": student_step,
        "teacher": teacher_forward,
        "kd": kd_step,
        "kd_cached": kd_cached_step,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for i in range(cfg.warmup + cfg.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if i >= cfg.warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"batch {cfg.batch_size} x seq {cfg.seq_length}, {cfg.threads} threads, {cfg.repeats} repeats")
    for name, values in times.items():
        print(f"  {name:<10} median {med[name]:8.1f} ms   min {min(values):8.1f}   max {max(values):8.1f}")
    ratio = med["kd"] / (med["student"] + med["teacher"])
    print(f"kd / (student + teacher) = {ratio:.3f}   (goal <= 1.10)")
    print(f"kd_cached / student      = {med['kd_cached'] / med['student']:.3f}")


if __name__ == "__main__":
    main()
