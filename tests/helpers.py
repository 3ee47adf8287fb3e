"""Shared test helpers: tiny labelled data and tiny run configs for the loop and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from distil.adapters import forward_features
from distil.config import RunConfig, build_run_config
from distil.training.checkpoint import checkpoint_tensors
from distil.training.loop import train
from distil.training.setup import build_run
from factories import save_tiny_pair

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "awful",
    "not",
    "very",
    "and",
    "of",
    "this",
    "that",
    "he",
    "she",
    "dog",
    "cat",
]


def write_tiny_task(
    path: Path, rows: int = 32, seed: int = 0, regression: bool = False, words_per_row: int | None = None
) -> Path:
    """A JSONL file of random short sentences with a learnable label (does it contain 'good'?).

    ``words_per_row`` fixes every sentence's length (each word is one token of the tiny vocabulary).
    """
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(rows):
            words = rng.choices(WORDS, k=words_per_row or rng.randint(2, 12))
            label: float | int = float(words.count("good")) if regression else int("good" in words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def tiny_run(tmp: Path, method: str = "kd", **overrides: Any) -> RunConfig:
    """A run config over tiny BERT teacher/student and tiny custom data under ``tmp``."""
    teacher = tmp / "teacher"
    if not teacher.exists():
        save_tiny_pair(teacher, "bert", num_labels=2)
    train = tmp / "train.jsonl"
    if not train.exists():
        write_tiny_task(train, 32, seed=0)
        write_tiny_task(tmp / "dev.jsonl", 16, seed=1)
    data: dict[str, Any] = {
        "run_dir": str(tmp / f"run-{method}"),
        "models": {"teacher": str(teacher), "student": {"init": "layers", "layers": [2]}},
        "data": {
            "task": "custom",
            "train_file": str(train),
            "dev_file": str(tmp / "dev.jsonl"),
            "text_columns": ["text"],
            "label_column": "label",
            "label_names": ["0", "1"],
            "max_length": 32,
            "group_by_length": False,
        },
        "train": {
            "batch_size": 8,
            "epochs": 2,
            "lr": 1e-3,
            "warmup_ratio": 0.0,
            "log_every": 1,
            "report_to": [],
            "seed": 3,
        },
        "method": {"name": method},
    }
    if method == "ted" and "plan.name" not in overrides:
        # Filters on tiny random models learn nothing in a few steps; the gate has tests of its own.
        data["plan"] = {"name": "ted", "allow_chance_filters": True}
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return build_run_config(data)


CORPUS = Path(__file__).parent / "assets" / "corpus"


def corpus_run(
    tmp_path: Path,
    teacher: Path,
    student: dict[str, Any],
    method: dict[str, Any],
    name: str = "run",
    **train: Any,
) -> dict[str, Any]:
    """A raw run config of a tiny task-agnostic run on ``tests/assets/corpus`` (blocks of 16 tokens)."""
    return {
        "run_dir": str(tmp_path / name),
        "models": {"teacher": str(teacher), "student": student},
        "data": {
            "task": "corpus",
            "corpus": [str(CORPUS)],
            "max_length": 16,
            "cache_dir": str(tmp_path / "c"),
        },
        "train": {"batch_size": 4, "lr": 1e-3, "report_to": [], "log_every": 1, **train},
        "method": method,
    }


def train_interrupted(cfg: RunConfig, method: type, at_call: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` until the ``at_call``-th call of ``method.loss``, which raises KeyboardInterrupt."""
    calls = {"n": 0}
    original = method.loss

    def crash(self: Any, batch: Any, student: Any, teacher: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, batch, student, teacher)

    monkeypatch.setattr(method, "loss", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(method, "loss", original)


def in_bundled_layout(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``tmp`` with the bundled data at its repository path, so README commands run as written."""
    data = tmp / "tests" / "assets" / "data"
    data.mkdir(parents=True)
    for kind in ("custom", "chat"):
        (data / kind).symlink_to(Path(__file__).resolve().parent / "assets" / "data" / kind)
    monkeypatch.chdir(tmp)


def first_rows_features(parts: Any, n: int) -> tuple[Any, Any, Any]:
    """The first ``n`` training rows of a built run as one batch, with both models' features of it."""
    batch = parts.task.collate([parts.task.train_set[i] for i in range(n)])
    student = forward_features(parts.student, batch, parts.method.student_request())
    with torch.no_grad():
        teacher = forward_features(parts.teacher, batch, parts.method.teacher_request())
    return batch, student, teacher


def live_pruned_student(cfg: RunConfig, checkpoint: Path) -> tuple[Any, Any]:
    """Rebuild a pruning run's live student (and method) from a checkpoint, as a resume would."""
    parts = build_run(cfg)
    state = load_file(checkpoint / "method_state.safetensors")
    parts.method.restore_shapes(state)  # narrowed to the saved widths (slicing), or kept (masks)
    weights = checkpoint_tensors(checkpoint, "model.student.")
    missing, unexpected = parts.student.load_state_dict(weights, strict=False)
    # A checkpoint stores tied weights once: only aliases of stored tensors may be missing.
    stored = {t.data_ptr() for k, t in parts.student.state_dict().items() if k in weights}
    assert not unexpected and all(parts.student.state_dict()[k].data_ptr() in stored for k in missing)
    parts.method.trainable_modules().load_state_dict(checkpoint_tensors(checkpoint, "model.extras."))
    parts.method.load_state_dict(state)
    return parts.student.eval(), parts.method
