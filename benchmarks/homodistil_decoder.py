"""HomoDistil on a Llama-style decoder pays for the width it has, and what a prune event costs.

1. ``step``: a HomoDistil run on a random Llama-style teacher is driven past its last prune event
   (``t_f = 2``), so its student is the target (half of every width: KV groups, hidden, SwiGLU) narrowed
   in place; its loop step then alternates with a KD step on a fresh student built from the target config
   (`models.student.init=config`), same teacher, same batch, the same objective (HomoDistil's layer terms
   off: KL at temperature 2 plus the next-token loss, weights 0.5 / 0.5 as KD's). Medians of
   ``repeats``. Goal: HomoDistil / fresh <= 1.10.
2. ``event``: one prune event from the full widths to the target (``t_i = 0``, ``t_f = 1``), timed from
   the method's ``on_step_end`` through the optimizer-state cut (`assembly.resize`), against a step at
   full width.

    .venv/bin/python benchmarks/homodistil_decoder.py --config benchmarks/homodistil_decoder.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from distil.config import read_yaml
from distil.models.loading import load_tokenizer
from distil.schema import from_dict

sys.path.insert(0, str(Path(__file__).parent))
from floor import BenchConfig as FloorConfig
from floor import _data, alternating_medians, loop_stepping

GOAL = 1.10


@dataclass
class BenchConfig:
    """Teacher shape, batch and timing; the target keeps ``ratio`` of every width (``target_width_ratio``).

    ``precision``: ``train.precision`` of both runs (``bf16-mixed`` on a GPU).
    """

    layers: int = 4
    hidden: int = 512
    heads: int = 8
    kv_heads: int = 4
    ffn: int = 1408
    batch: int = 8
    seq: int = 128
    repeats: int = 15
    warmup: int = 3
    threads: int = 2
    seed: int = 0
    ratio: float = 0.5
    precision: str = "fp32"


def _teacher(cfg: BenchConfig, folder: Path) -> Path:
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.ffn,
        max_position_embeddings=max(512, cfg.seq), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    out = folder / "teacher"
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _raw(
    cfg: BenchConfig, folder: Path, teacher: Path, name: str, method: dict[str, Any], student: dict[str, Any]
) -> dict[str, Any]:
    floor = FloorConfig(corpus_batch=cfg.batch, corpus_seq=cfg.seq, seed=cfg.seed, methods=[])
    corpus = folder / "corpus.txt"
    if not corpus.exists():
        _data(floor, folder)
    return {
        "run_dir": str(folder / name),
        "models": {"teacher": str(teacher), "student": student},
        "data": {
            "task": "lm",
            "corpus": [str(corpus)],
            "max_length": cfg.seq,
            "cache_dir": str(folder / "c"),
        },
        "train": {
            "batch_size": cfg.batch,
            "max_steps": 10**6,
            "report_to": [],
            "seed": cfg.seed,
            "precision": cfg.precision,
        },
        "eval": {"select": "last"},
        "method": method,
        "plan": {"name": "single"},
    }


def _homodistil(t_f: int, ratio: float) -> dict[str, Any]:
    """KD's objective (T 2, half KL and half next-token loss), pruning to ``ratio`` of each width."""
    return {
        "name": "homodistil", "t_i": 0, "t_f": t_f, "delta_t": 1, "alpha_hidden": 0.0, "alpha_attn": 0.0,
        "alpha_emb": 0.0, "alpha_kl": 0.5, "alpha_mlm": 0.5, "temperature": 2.0, "target_width_ratio": ratio,
    }  # fmt: skip


def _step_ratio(cfg: BenchConfig, folder: Path, teacher: Path) -> dict[str, float]:
    homo, method = loop_stepping(
        _raw(cfg, folder, teacher, "homo", _homodistil(2, cfg.ratio), {"init": "copy"}), 2
    )
    widths = method.target
    fresh_student = {
        "init": "config", "num_layers": cfg.layers, "hidden_size": widths["hidden"],
        "num_heads": widths["kv_heads"] * cfg.heads // cfg.kv_heads, "intermediate_size": widths["ffn"],
    }  # fmt: skip
    kd = {"name": "kd", "alpha": 0.5, "temperature": 2.0}
    fresh, _ = loop_stepping(_raw(cfg, folder, teacher, "fresh", kd, fresh_student), 0)
    med = alternating_medians({"homodistil": homo, "fresh": fresh}, cfg.warmup, cfg.repeats)
    return {
        "homodistil_ms": med["homodistil"],
        "fresh_ms": med["fresh"],
        "ratio": med["homodistil"] / med["fresh"],
    }


def _event(cfg: BenchConfig, folder: Path, teacher: Path) -> dict[str, float]:
    step, _ = loop_stepping(
        _raw(cfg, folder, teacher, "event", _homodistil(1, cfg.ratio), {"init": "copy"}), 0
    )
    start = time.perf_counter()
    event = step()  # step 1 at full width, then the prune event to the target widths
    total = time.perf_counter() - start
    return {"event_ms": event * 1000, "full_width_step_ms": (total - event) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML with BenchConfig fields")
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, read_yaml(args.config) if args.config else {})
    torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher = _teacher(cfg, folder)
        step = _step_ratio(cfg, folder, teacher)
        verdict = "met" if step["ratio"] <= GOAL else "NOT met"
        print(
            f"step at the target widths: homodistil {step['homodistil_ms']:.1f} ms   fresh target-config "
            f"student {step['fresh_ms']:.1f} ms   ratio {step['ratio']:.3f}   "
            f"(goal <= {GOAL:.2f}: {verdict})",
            flush=True,
        )
        event = _event(cfg, folder, teacher)
        print(
            f"prune event (full -> target widths): {event['event_ms']:.1f} ms   "
            f"(a full-width step: {event['full_width_step_ms']:.1f} ms)",
            flush=True,
        )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if args.json:
        report = {"settings": cfg.__dict__, "device": device, "step": step, "event": event}
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
