"""What a resumed run may change: a resume must continue the run it claims to be.

On ``--resume`` the config given is compared with the one the run saved (``RUN_DIR/config.yaml``). Keys
that change how or where the run executes but not what it computes may differ (`SAFE_TO_CHANGE`: logging,
evaluation and checkpoint frequency, data workers, the engine and per-process batch, as long as the
global batch stays, which the loop checks against the checkpoint); any other difference (data, models,
method, learning rate, schedule, seed, precision) is refused with every changed key and its two values.
Accepted changes are recorded in ``RUN_DIR/resumes.json`` and in the exported recipe, and the saved
config becomes the one used from then on.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from distil.errors import ConfigError
from distil.files import atomic_write_text, not_utf8
from distil.run_config import RunConfig

__all__ = [
    "SAFE_TO_CHANGE",
    "check_same_run",
    "config_changes",
    "read_resumes",
    "record_resume",
]

SAFE_TO_CHANGE = frozenset(
    {
        "run_dir",  # the same folder, however it is spelled
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.report_to",
        "train.tensorboard",  # removed (train.report_to); configs saved before still hold it
        "train.progress_seconds",
        "train.num_workers",
        "train.threads",
        "train.dist_timeout_minutes",
        "train.batch_size",  # with train.grad_accum and the process count: the global batch is checked
        "train.grad_accum",
        "train.parallel",  # moved to engine.name; configs saved before still hold these three
        "train.cpu_offload",
        "train.ram_efficient_loading",
        "engine.name",
        "engine.cpu_offload",
        "engine.ram_efficient_loading",
        "engine.find_unused_parameters",
        "train.activation_checkpointing",
        "train.compile",
        "eval.batch_size",
        "data.cache_dir",
        "models.attn_implementation",
    }
)
_RESUMES = "resumes.json"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between two raw configs: ``key -> (saved, new)``."""
    a, b = _flat(saved), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    recipe = run_dir / "student" / "recipe.json"
    if not path.is_file() and recipe.is_file() and not_utf8(recipe) is None:
        # A finished plan (TED's stages) keeps its whole config in the exported recipe, not in a root file.
        with contextlib.suppress(json.JSONDecodeError):
            saved = json.loads(recipe.read_text(encoding="utf-8")).get("config")
            if isinstance(saved, dict):
                return saved
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing, so --resume cannot check that this is the same run: start anew with "
            "--overwrite."
        )
    bad = not_utf8(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if bad is None else None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a config distil wrote; start anew with --overwrite.")
    return data


def check_same_run(run_dir: Path, cfg: RunConfig, what: str = "--resume") -> dict[str, tuple[Any, Any]]:
    """Refuse a config that would make the resumed run another run; returns the accepted changes.

    Raises:
        ConfigError: Keys outside `SAFE_TO_CHANGE` differ; the message lists each with both values.
    """
    saved = _saved_config(run_dir)
    changes = config_changes(saved, cfg.to_dict())
    # A key this version added, at its default, is the behaviour the run was trained with.
    defaults = _flat(_section_defaults(cfg))
    changes = {
        k: v for k, v in changes.items() if not (v[0] is None and k in defaults and defaults[k] == v[1])
    }
    refused = {k: v for k, v in changes.items() if k not in SAFE_TO_CHANGE}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(
            f"{what}: the config differs from the one {run_dir} was trained with ({listed}). A resumed run "
            "must be the same run: resume with the saved config (RUN_DIR/config.yaml), or start anew with "
            "--overwrite or another run_dir."
        )
    return {k: v for k, v in changes.items() if k != "run_dir"}


def _section_defaults(cfg: RunConfig) -> dict[str, Any]:
    """The sections of ``cfg`` as their classes build them with no arguments (where they can)."""
    out: dict[str, Any] = {}
    for section in ("train", "eval", "method", "engine"):
        value = getattr(cfg, section)
        if value is None:
            continue
        try:
            out[section] = asdict(type(value)())
        except (TypeError, ConfigError):  # a section with required fields has no defaults to offer
            continue
    return out


def read_resumes(run_dir: Path) -> list[dict[str, Any]]:
    """The resumes recorded for a run (empty for a run never resumed), checked.

    Raises:
        ConfigError: The file is not UTF-8 JSON holding a list of records (damaged or edited by hand).
    """
    path = run_dir / _RESUMES
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        history, reason = None, f"{type(err).__name__}: {err}"
    else:
        reason = "not a list of resume records"
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ConfigError(
            f"{path} is damaged ({reason}); it only lists earlier resumes, so delete it (or restore it) "
            "and resume again."
        )
    return history


def record_resume(run_dir: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> list[dict[str, Any]]:
    """Append this resume (from which step, with which accepted changes) to the run's history; returns it."""
    history = read_resumes(run_dir)
    history.append({"from_step": step, "changed": {k: list(v) for k, v in changes.items()}})
    atomic_write_text(run_dir / _RESUMES, json.dumps(history, indent=1, default=str))
    return history
