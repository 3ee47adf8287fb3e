"""Student-only export: a standard Hugging Face checkpoint, its tokenizer and a recipe file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil import __version__

__all__ = ["METHOD_MODULES", "export_student", "save_best"]

METHOD_MODULES = "method.safetensors"


def _save_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path, extras: nn.Module | None
) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if extras is not None and any(True for _ in extras.parameters()):
        save_model(extras, str(tmp / METHOD_MODULES))
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_best(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path, extras: nn.Module | None = None
) -> None:
    """Keep the best student so far (and the method's modules of that moment) in ``run_dir/best``."""
    _save_atomically(model, tokenizer, run_dir / "best", extras)


def export_student(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    recipe: dict[str, Any],
    *,
    extras: nn.Module | None = None,
) -> Path:
    """Write ``run_dir/student``: the best student if one was selected, else the final one.

    The folder loads with ``AutoModelForSequenceClassification.from_pretrained`` (or ``AutoModel`` for
    task-agnostic runs); method-owned modules (``extras``, e.g. TED filters) go to ``method.safetensors``
    beside it, for later stages; ``recipe.json`` (method, teacher, data, hyper-parameters, results) is
    written last and marks the run as finished.
    """
    target = run_dir / "student"
    best = run_dir / "best"
    if best.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(best, target)
    else:
        _save_atomically(model, tokenizer, target, extras)
    recipe = {"distil_version": __version__, **recipe}
    tmp = target / ".recipe.json.tmp"
    tmp.write_text(json.dumps(recipe, indent=2, default=str))
    os.replace(tmp, target / "recipe.json")
    return target
