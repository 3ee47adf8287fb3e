"""Uploading an exported student to the Hugging Face Hub (``distil export --push-to-hub REPO``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distil.errors import ConfigError

__all__ = ["check_hub", "push_folder"]

_TRUE = {"1", "true", "yes", "on"}


def check_hub(repo: str) -> None:
    """Refuse an upload that cannot happen, before anything is exported.

    Raises:
        ConfigError: The repository id is malformed, the Hub is switched off (``HF_HUB_OFFLINE``), no token
            is available, or the Hub cannot be reached.
    """
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"--push-to-hub {repo!r}: give a repository id as OWNER/NAME.")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        raise ConfigError(
            "--push-to-hub: the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is set); nothing was "
            "exported. Unset it on a machine with network access, or export without --push-to-hub."
        )
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise ConfigError(
            "--push-to-hub: no Hugging Face token (run `huggingface-cli login` or set HF_TOKEN); nothing was "
            "exported."
        )
    try:
        HfApi().whoami()
    except Exception as err:  # network errors and invalid tokens come in many types
        raise ConfigError(f"--push-to-hub: the Hub cannot be reached ({err}); nothing was exported.") from err


def push_folder(folder: Path, repo: str) -> str:
    """Upload ``folder`` (model, tokenizer, ONNX files, card) to ``repo``; returns its URL.

    ``recipe.json`` goes up as `distil.card.public_recipe` writes it: local paths (the training file, the
    teacher folder, the run directory) by name only.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from distil.card import public_recipe

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    operations = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == "recipe.json":
            recipe = public_recipe(json.loads(path.read_text(encoding="utf-8")))
            content: bytes | str = (json.dumps(recipe, indent=2) + "\n").encode()
        else:
            content = str(path)
        operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
    api.create_commit(repo, operations, commit_message="Upload a student distilled with distil")
    return f"https://huggingface.co/{repo}"
