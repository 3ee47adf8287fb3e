"""Which int8 ONNX graph of a BERT-like classifier is fastest on this CPU: variants timed side by side.

All variants come from one eager-attention trace of the model and are quantised as `distil export --int8`
does (dynamic, per-channel int8 weights); they differ in what onnxruntime's transformer optimiser fuses:
  fused           what `distil export --int8 --optimize` writes (QAttention, SkipLayerNorm, BiasGelu)
  no-skip-ln      the same without SkipLayerNormalization (Add + LayerNormalization)
  fast-gelu       the same with the tanh approximation of GELU (FastGelu)
  fp32-attention  fused, but the Attention op left in fp32 (only MatMuls quantised)
  unfused-attn    no attention fusion; the Q/K/V/output MatMuls int8, the score and context MatMuls fp32
  plain           no fusion at all (what `distil export --int8` writes)
Every variant runs with onnxruntime's own (spinning) threads and is timed in rotated blocks.

    .venv/bin/python benchmarks/int8_graphs.py --config benchmarks/int8_graphs.yaml
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from distil.config import read_yaml
from distil.deploy.int8 import DEFAULT_INT8_FORMAT, INT8_FORMATS, quantize
from distil.deploy.onnx import _trace
from distil.deploy.probe import probe_batches
from distil.deploy.runtime import OnnxModel, load_classifier, resolve_model_dir
from distil.evaluation.speed import time_blocks
from distil.schema import from_dict


@dataclass
class BenchConfig:
    """Benchmark settings."""

    model: str = "embedded"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    seq_length: int = 128
    repeats: int = 30
    warmup: int = 3
    threads: int = 2
    seed: int = 0


FUSION: dict[str, dict[str, bool] | None] = {
    "fused": {},
    "no-skip-ln": {"enable_skip_layer_norm": False},
    "fast-gelu": {"enable_gelu_approximation": True},
    "fp32-attention": {},
    "unfused-attn": {"enable_attention": False},
    "plain": None,
}


def _build(name: str, trace: Path, out: Path, heads: int, hidden: int) -> Path:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    graph = trace
    if FUSION[name] is not None:
        options = FusionOptions("bert")
        for key, value in (FUSION[name] or {}).items():
            setattr(options, key, value)
        fused = optimize_model(
            str(trace), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
            optimization_options=options,
        )  # fmt: skip
        graph = out / f"{name}.fp32.onnx"
        fused.save_model_to_file(str(graph))
    target = out / f"{name}.int8.onnx"
    if name in ("fp32-attention", "unfused-attn"):
        model = onnx.load(str(graph))
        weights = {i.name for i in model.graph.initializer}
        # Score and context products multiply two activations: quantising them is not what the export does.
        activations = [
            n.name
            for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in weights for i in n.input)
        ]
        quantize(graph, target, INT8_FORMATS[DEFAULT_INT8_FORMAT], op_types=["MatMul"], exclude=activations)
    else:
        quantize(graph, target, INT8_FORMATS[DEFAULT_INT8_FORMAT])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    logging.disable(logging.WARNING)  # the quantiser's pre-processing advice, once per variant
    model_dir = resolve_model_dir(cfg.model)
    model = load_classifier(model_dir)
    model.set_attn_implementation("eager")
    trace_batch, _ = probe_batches(model, model_dir)
    heads, hidden = int(model.config.num_attention_heads), int(model.config.hidden_size)
    with tempfile.TemporaryDirectory(prefix="distil-int8-graphs-") as tmp:
        out = Path(tmp)
        _trace(model, trace_batch, out / "trace.onnx", 17)
        sessions = {
            name: OnnxModel(
                _build(name, out / "trace.onnx", out, heads, hidden), threads=cfg.threads, spin=True
            )
            for name in FUSION
        }
        g = torch.Generator().manual_seed(cfg.seed)
        print(f"{model_dir}: seq {cfg.seq_length}, {cfg.threads} threads, {cfg.repeats} repeats, spinning")
        for batch_size in cfg.batch_sizes:
            ids = torch.randint(1000, model.config.vocab_size, (batch_size, cfg.seq_length), generator=g)
            batch = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids),
            }
            feeds = {name: s.feeds(batch) for name, s in sessions.items()}
            calls = {
                name: (lambda s=s, f=feeds[name]: s.session.run(None, f)) for name, s in sessions.items()
            }
            latency = time_blocks(calls, repeats=cfg.repeats, warmup=cfg.warmup)
            base = latency["fused"].median_ms
            for name, lat in latency.items():
                print(
                    f"  batch {batch_size:>3}  {name:<15} median {lat.median_ms:8.2f} ms  "
                    f"IQR {lat.q1_ms:8.2f}-{lat.q3_ms:8.2f}  vs fused {lat.median_ms / base:5.2f}x"
                )


if __name__ == "__main__":
    main()
