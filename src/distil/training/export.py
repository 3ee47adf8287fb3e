"""Student-only export: a standard Hugging Face checkpoint, its tokenizer and a recipe file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil import __version__

__all__ = ["export_student", "save_best"]


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_best(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> None:
    """Keep the best student so far in ``run_dir/best``."""
    _save_atomically(model, tokenizer, run_dir / "best")


def export_student(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path, recipe: dict[str, Any]
) -> Path:
    """Write ``run_dir/student``: the best student if one was selected, else the final one.

    The folder loads with ``AutoModelForSequenceClassification.from_pretrained``; ``recipe.json`` (method,
    teacher, data, hyper-parameters, results) is written last and marks the run as finished.
    """
    target = run_dir / "student"
    best = run_dir / "best"
    if best.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(best, target)
    else:
        _save_atomically(model, tokenizer, target)
    recipe = {"distil_version": __version__, **recipe}
    tmp = target / ".recipe.json.tmp"
    tmp.write_text(json.dumps(recipe, indent=2, default=str))
    os.replace(tmp, target / "recipe.json")
    return target
