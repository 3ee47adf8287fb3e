"""Teacher and student side by side: size, FLOPs, latency and throughput per runtime, and task metrics.

Every model is run in PyTorch fp32 and, when exports sit beside it (``<model>/onnx/``), in onnxruntime fp32
and int8 with as many intra-op threads as torch uses, at each batch size in turn. By default all runtimes
of all models are timed interleaved within each repeat, onnxruntime's threads not spinning
(`distil.evaluation.speed.time_interleaved`). With ``onnx_spin`` onnxruntime keeps its default spinning
threads and every runtime is timed in blocks (`distil.evaluation.speed.time_blocks`): the latency a
process serving one model sees.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.deploy.cpu import cpu_info
from distil.deploy.runtime import (
    HEAD_OUTPUTS,
    OnnxModel,
    find_exports,
    load_exportable,
    resolve_model_dir,
)
from distil.errors import ConfigError
from distil.evaluation.flops import FLOPS_METHOD, flops_per_token
from distil.evaluation.speed import random_batch, time_blocks, time_interleaved
from distil.models.families import position_limit
from distil.models.loading import load_tokenizer
from distil.models.students import count_parameters
from distil.tasks.classification import ClassificationTask

__all__ = ["PYTORCH", "DevSplit", "run_bench"]

PYTORCH = "pytorch-fp32"
BLOCK_ROUNDS = 3  # with onnx_spin: blocks per runtime (see `time_blocks`)


@dataclass(frozen=True)
class DevSplit:
    """Labelled text to score every runtime on, with the task's own evaluation.

    Attributes:
        task: A classification task loaded for evaluation (``eval_only``); tokenised per model.
        max_length: Truncation length in tokens.
        batch_size: Evaluation batch size.
    """

    task: ClassificationTask
    max_length: int = 128
    batch_size: int = 64


@dataclass
class _Runtime:
    model: str
    runtime: str
    path: Path
    run: Callable[[dict[str, torch.Tensor]], Any]
    onnx: OnnxModel | None = None


def _disk_mb(model_dir: Path, onnx: OnnxModel | None) -> float:
    if onnx is not None:
        files = [onnx.path, *onnx.path.parent.glob(onnx.path.name + ".data")]
    else:
        files = [*model_dir.glob("*.safetensors"), *model_dir.glob("pytorch_model*.bin")]
    return sum(f.stat().st_size for f in files) / 1e6


def _runtimes(
    name: str, model_dir: Path, model: PreTrainedModel, head: str, onnx: bool, threads: int, spin: bool
) -> list[_Runtime]:
    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> Any:
        return model(**model_inputs(model, batch))

    out = [_Runtime(name, PYTORCH, model_dir, forward)]
    if onnx:
        for runtime, path in find_exports(model_dir).items():
            session = OnnxModel(path, threads=threads, spin=spin, outputs=HEAD_OUTPUTS[head])
            out.append(_Runtime(name, runtime, path, session, session))
    return out


def _metrics(rt: _Runtime, model: Any, dev: DevSplit) -> dict[str, float]:
    return dev.task.evaluate(model if rt.onnx is None else rt.onnx, dev.batch_size)


def _timing(
    runtimes: list[_Runtime],
    vocab: dict[str, int],
    batch_sizes: Sequence[int],
    seq_length: int,
    blocks: bool,
    *,
    repeats: int,
    warmup: int,
) -> dict[int, dict[str, Any]]:
    out = {}
    for bs in batch_sizes:
        fns: dict[str, Callable[[], object]] = {}
        for rt in runtimes:
            batch = random_batch(vocab[rt.model], bs, seq_length)
            if rt.onnx is not None:
                fns[f"{rt.model}/{rt.runtime}"] = _bind(rt.onnx.run, rt.onnx.feeds(batch))
            else:
                fns[f"{rt.model}/{rt.runtime}"] = _bind(rt.run, batch)
        if blocks:
            out[bs] = time_blocks(fns, rounds=BLOCK_ROUNDS, repeats=repeats, warmup=warmup)
        else:
            out[bs] = time_interleaved(fns, repeats=repeats, warmup=warmup)
    return out


def _check_length(name: str, model: PreTrainedModel, seq_length: int) -> None:
    limit = position_limit(model.config)
    if limit is not None and seq_length > limit:
        raise ConfigError(f"--seq-length {seq_length} is longer than the {name}'s {limit} positions.")


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    # Quartiles of a single repeat are NaN, which strict JSON readers reject.
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def _bind(fn: Callable[[Any], Any], arg: Any) -> Callable[[], object]:
    return lambda: fn(arg)


def run_bench(
    models: dict[str, str | Path],
    *,
    seq_length: int = 128,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    onnx: bool = True,
    onnx_spin: bool = False,
    dev: DevSplit | None = None,
) -> dict[str, Any]:
    """Benchmark models side by side; the first one (the teacher) is the speedup baseline.

    Args:
        models: Display name -> run directory, model directory or ``"embedded"``.
        seq_length: Tokens per timed sequence (random ids, no padding).
        batch_sizes: Batch sizes to time.
        repeats: Timed passes per runtime and batch size (median, quartiles, min and max reported).
        warmup: Untimed passes first.
        threads: torch and onnxruntime intra-op threads (``None``: torch's current setting).
        onnx: Also run the ONNX exports found beside each model.
        onnx_spin: onnxruntime threads spin between ops (its default) and every runtime is timed in
            blocks rotated over ``BLOCK_ROUNDS`` rounds instead of interleaved call by call.
        dev: Labelled data to compute each runtime's task metrics on; ``None`` skips metrics.

    Returns:
        ``{"settings": {...}, "rows": [...]}``, one row per model and runtime (JSON-serialisable).

    Raises:
        ConfigError: ``seq_length`` is longer than a model's position table.
        ModelError: A model cannot be found or loaded.
    """
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        rows, runtimes, vocab = [], [], {}
        dirs = {name: resolve_model_dir(where) for name, where in models.items()}  # fail before any work
        for name, model_dir in dirs.items():
            model, head = load_exportable(model_dir)
            if dev is not None and head != "seq":
                raise ConfigError(f"{name} is a {head} model: task metrics are scored for classifiers only.")
            _check_length(name, model, seq_length)
            vocab[name] = int(model.config.vocab_size)
            static = {
                "parameters": count_parameters(model),
                "flops_per_token": flops_per_token(model, seq_length),
            }
            if dev is not None:
                dev.task.prepare(load_tokenizer(str(model_dir)), dev.max_length)
            for rt in _runtimes(name, model_dir, model, head, onnx, threads, onnx_spin):
                row = {"model": name, "runtime": rt.runtime, "path": str(rt.path), **static}
                row["size_mb"] = _disk_mb(model_dir, rt.onnx)
                if rt.onnx is not None and rt.onnx.int8_format is not None:
                    row["int8_format"] = rt.onnx.int8_format
                if dev is not None:
                    row["metrics"] = _metrics(rt, model, dev)
                rows.append(row)
                runtimes.append(rt)
        timing = _timing(runtimes, vocab, batch_sizes, seq_length, onnx_spin, repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(previous)
    teacher = next(iter(models))
    base = f"{teacher}/{PYTORCH}"
    notes = []
    for row in rows:
        key = f"{row['model']}/{row['runtime']}"
        row["latency_ms"] = {str(bs): _finite(vars(t[key])) for bs, t in timing.items()}
        row["throughput_seq_per_s"] = {str(bs): bs * 1000 / t[key].median_ms for bs, t in timing.items()}
        # Three ratios, kept apart: what distillation bought (against the teacher in the same runtime), what
        # the runtime bought (against the same model in PyTorch), and both together (against the teacher
        # in PyTorch: `speedup`, the baseline of the table).
        row["speedup"] = {str(bs): t[base].median_ms / t[key].median_ms for bs, t in timing.items()}
        own = f"{row['model']}/{PYTORCH}"
        row["runtime_speedup"] = {str(bs): t[own].median_ms / t[key].median_ms for bs, t in timing.items()}
        same = f"{teacher}/{row['runtime']}"
        if all(same in t for t in timing.values()):
            row["distillation_speedup"] = {
                str(bs): t[same].median_ms / t[key].median_ms for bs, t in timing.items()
            }
        elif row["model"] != teacher:
            flag = " --int8" if "int8" in str(row["runtime"]) else ""
            notes.append(
                f"{row['model']} {row['runtime']}: the teacher has no {row['runtime']} export, so what "
                f"distillation bought in that runtime is not measured; export the teacher the same way "
                f"(`distil export TEACHER{flag}`) and bench again."
            )
    settings = {
        "seq_length": seq_length,
        "batch_sizes": list(batch_sizes),
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "flops_method": FLOPS_METHOD,
        "timing": (
            f"blocks: each runtime's warm-up and a share of its repeats back to back, rotated over "
            f"{min(BLOCK_ROUNDS, repeats)} rounds; onnxruntime threads spinning (its default)"
            if onnx_spin
            else "interleaved: every runtime of every model in turn within each repeat; onnxruntime threads "
            "not spinning"
        ),
        "onnx_spin": onnx_spin,
        "speedup_baseline": base,
        "task": dev.task.name if dev else None,
        "main_metric": dev.task.main_metric if dev else None,
        "dev_examples": len(dev.task.dev_set) if dev and dev.task.dev_set is not None else 0,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu": cpu_info().as_dict(),
            "torch": torch.__version__,
        },
    }
    return {"settings": settings, "rows": rows, "notes": notes}
