"""Tiny extractive-QA and causal-LM runs for the SQuAD / LM tests: models, data paths and run configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForQuestionAnswering

from distil.config import RunConfig, build_run_config
from factories import ASSETS, tiny_config, tiny_model, tiny_tokenizer

SQUAD_V1 = ASSETS / "squad" / "tiny-v1.1.json"
SQUAD_V2 = ASSETS / "squad" / "tiny-v2.0.json"
CORPUS = ASSETS / "corpus"


def save_tiny_qa(path: Path, family: str = "bert", **overrides: Any) -> Path:
    """A tiny question-answering model (random head) with the tiny tokenizer, saved under ``path``."""
    if not path.exists():
        model = AutoModelForQuestionAnswering.from_config(tiny_config(family, **overrides))
        model.save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


def save_tiny_lm(path: Path, family: str = "gpt2") -> Path:
    """A tiny causal LM with the tiny WordPiece tokenizer (its [PAD] is id 0, GPT-2's eos is id 3)."""
    if not path.exists():
        tiny_model(family, "lm").save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


def _set(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def _with_plan(data: dict[str, Any], method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """TED's plan lets a filter at chance through: filters on tiny random models learn nothing in a few
    steps (the gate has tests of its own, tests/unit/test_ted.py)."""
    if method == "ted" and "plan.name" not in overrides:
        data["plan"] = {"name": "ted", "allow_chance_filters": True}
    return data


def _train_section() -> dict[str, Any]:
    return {"batch_size": 4, "epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "log_every": 1}


def qa_run(tmp: Path, method: str, family: str = "bert", **overrides: Any) -> RunConfig:
    """A run on the tiny SQuAD v1.1 file (3 training articles, 1 held out) with a tiny QA teacher."""
    teacher = save_tiny_qa(tmp / f"qa-{family}", family)
    data: dict[str, Any] = {
        "run_dir": str(tmp / f"run-{method}"),
        "models": {"teacher": str(teacher), "student": {"init": "layers", "layers": [2]}},
        "data": {
            "task": "squad",
            "dev_file": str(SQUAD_V1),
            "split_dev": 0.25,
            "max_length": 48,
            "doc_stride": 16,
            "group_by_length": False,
        },
        "train": _train_section() | {"report_to": [], "seed": 3},
        "method": {"name": method},
    }
    return build_run_config(_set(_with_plan(data, method, overrides), overrides))


def lm_run(tmp: Path, method: str, family: str = "gpt2", **overrides: Any) -> RunConfig:
    """A run on the tiny corpus (blocks of 16 tokens) with a tiny decoder teacher; perplexity on plain.txt."""
    teacher = save_tiny_lm(tmp / f"lm-{family}", family)
    data: dict[str, Any] = {
        "run_dir": str(tmp / f"run-{method}"),
        "models": {"teacher": str(teacher), "student": {"init": "layers", "layers": [2]}},
        "data": {
            "task": "lm",
            "corpus": [str(CORPUS)],
            "dev_file": str(CORPUS / "plain.txt"),
            "max_length": 16,
            "eval_stride": 8,
            "max_blocks": 16,
            "cache_dir": str(tmp / "blocks"),
        },
        "train": _train_section() | {"report_to": [], "seed": 3},
        "method": {"name": method},
    }
    return build_run_config(_set(_with_plan(data, method, overrides), overrides))


CHAT = ASSETS / "data" / "chat"
# A template whose markers are words of the tiny WordPiece vocabulary, so conversations stay short.
TINY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def chat_run(tmp: Path, method: str, family: str = "llama", **overrides: Any) -> RunConfig:
    """A run on the bundled chat set (24 conversations, 8 held out) with a tiny decoder teacher."""
    teacher = save_tiny_lm(tmp / f"lm-{family}", family)
    template = tmp / "tiny.jinja"
    template.write_text(TINY_TEMPLATE)
    data: dict[str, Any] = {
        "run_dir": str(tmp / f"run-{method}"),
        "models": {"teacher": str(teacher), "student": {"init": "layers", "layers": [2]}},
        "data": {
            "task": "chat",
            "train_file": str(CHAT / "chat.jsonl"),
            "dev_file": str(CHAT / "chat-test.jsonl"),
            "chat_template": str(template),
            "max_length": 48,
            "train_subset": 24,
            "dev_subset": 8,
        },
        "train": _train_section() | {"report_to": [], "seed": 3},
        "method": {"name": method},
    }
    return build_run_config(_set(data, overrides))
