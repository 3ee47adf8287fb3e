"""Student-only export: a standard Hugging Face checkpoint, its tokenizer and a recipe file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil import __version__
from distil.card import write_card

__all__ = ["METHOD_MODULES", "export_student", "save_best"]

METHOD_MODULES = "method.safetensors"


def _write(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, extras: dict[str, Tensor] | None
) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if extras:
        save_file({k: v.detach().contiguous().cpu() for k, v in extras.items()}, str(folder / METHOD_MODULES))


def _publish(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``target`` (a rename; the old one goes afterwards)."""
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _save_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path, extras: dict[str, Tensor] | None
) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _write(model, tokenizer, tmp, extras)
    _publish(tmp, target)


def save_best(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    extras: dict[str, Tensor] | None = None,
) -> None:
    """Keep the best student so far (and the method's modules of that moment) in ``run_dir/best``."""
    _save_atomically(model, tokenizer, run_dir / "best", extras)


def export_student(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    recipe: dict[str, Any],
    *,
    extras: dict[str, Tensor] | None = None,
) -> Path:
    """Write ``run_dir/student`` atomically: the best student if one was selected, else the final one.

    The folder loads with ``AutoModelForSequenceClassification.from_pretrained`` (or ``AutoModel`` for
    task-agnostic runs); method-owned modules (``extras``, e.g. TED filters) go to ``method.safetensors``
    beside it, for later stages; ``recipe.json`` (method, teacher, data, hyper-parameters, results) is
    written last and marks the run as finished.
    """
    target, best = run_dir / "student", run_dir / "best"
    tmp = run_dir / f".student.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if best.is_dir():
        shutil.copytree(best, tmp)
    else:
        _write(model, tokenizer, tmp, extras)
    recipe = {"distil_version": __version__, **recipe}
    # The recipe marks a finished run: it is in the folder before the folder takes its name.
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str), encoding="utf-8")
    write_card(tmp, title=run_dir.name)
    _publish(tmp, target)
    return target
