"""Bundled configs, config loading for the CLI, ``distil ls`` and ``distil validate``."""

from __future__ import annotations

import sys
from typing import Any

from distil.config import RunConfig, build_run_config, bundled_configs, read_config, resolve_config
from distil.errors import ConfigError
from distil.methods import get_method
from distil.schema import from_dict

__all__ = [
    "bundled_configs",
    "describe_registry",
    "load_compare_config",
    "load_pipeline_config",
    "load_run_config",
    "resolve_config",
    "validate",
]


def _raw(name_or_path: str | None, overrides: list[str]) -> dict[str, Any]:
    """The file with the overrides applied; what a switched method drops is said on stderr."""
    data, notes = read_config(name_or_path, overrides)
    for note in notes:
        print(f"distil: note: {note}", file=sys.stderr)
    return data


def load_run_config(
    name_or_path: str | None, overrides: list[str], *, method: str | None = None
) -> RunConfig:
    """Load a run config; ``method`` (from ``--method`` or the subcommand) sets ``method.name``."""
    data = _raw(name_or_path, overrides)
    node = data.setdefault("method", {}) or {}
    if not isinstance(node, dict):
        raise ConfigError("method must be a mapping with at least `name`.")
    if method is not None:
        get_method(method)  # an unknown name is an error of its own, with the closest known one
        if node.get("name") not in (None, method):
            raise ConfigError(
                f"The config's method.name is {node['name']!r} but the command asks for {method!r}; "
                "drop one of them."
            )
        node["name"] = method
    data["method"] = node
    return build_run_config(data)


def load_compare_config(name_or_path: str, overrides: list[str]) -> Any:
    """Load and validate a compare config into its grid (`distil.compare.build_setup`)."""
    from distil.compare import build_setup

    return build_setup(_raw(name_or_path, overrides))


def load_pipeline_config(name_or_path: str | None, overrides: list[str]) -> Any:
    """Load the main job's config (defaults when no file is given)."""
    from distil.plans.pipeline import PipelineConfig

    return from_dict(PipelineConfig, _raw(name_or_path, overrides))


def _first_line(obj: object) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0]


def describe_registry() -> str:
    """The text of ``distil ls``: methods, plans, tasks and engines from their registries, bundled configs."""
    from dataclasses import fields

    from distil.methods import METHODS
    from distil.plans import PLANS
    from distil.tasks import TASKS
    from distil.training.engines import ENGINES

    lines = ["Methods (method.name):"]
    lines += [f"  {name:<20} {_first_line(cls)}" for name, cls in METHODS.items()]
    lines.append("Plans (plan.name; default: the method's usual plan):")
    lines += [f"  {name:<20} {_first_line(cls)}" for name, cls in PLANS.items()]
    lines.append("Tasks (data.task), by kind:")
    for kind, cls in TASKS.items():
        lines.append(f"  {kind:<20} {_first_line(cls)}")
        lines.append(f"  {'':<20} data.task: {', '.join(cls.names)}")
    lines.append("Engines (engine.name; default auto: ddp with several processes, else none):")
    for name, engine in ENGINES.items():
        lines.append(f"  {name:<20} {_first_line(engine)}")
        options = [f"engine.{f.name}" for f in fields(engine.Options) if f.name != "name"]
        if options:
            lines.append(f"  {'':<20} options: {', '.join(options)}")
    lines.append("Bundled configs:")
    lines += [f"  {name}" for name in bundled_configs()]
    return "\n".join(lines)


def validate(
    name_or_path: str,
    overrides: list[str],
    *,
    check_data: bool = False,
    models: bool = True,
    time_steps: int = 0,
) -> str:
    """Validate a run or pipeline config as training would, without training; returns a summary.

    Besides the config itself, with ``models`` every plan step is built on the meta device from the
    checkpoints' config and tokenizer files (no weights are read; the data files are read but not
    tokenised unless ``check_data``); a model that does not exist yet is an error, as in training,
    unless an earlier step of the plan writes it. With ``time_steps``, each of those steps is also built
    for real and that many optimiser steps are timed, to estimate its wall time (nothing is written).

    Raises:
        DistilError: Whatever training would reject before its first step.
    """
    path = resolve_config(name_or_path)
    data = _raw(name_or_path, overrides)
    if "compare" in data:
        from distil.compare import build_setup, check_models

        setup = build_setup(data)
        if models:
            check_models(setup)
        c = setup.compare
        return (
            f"{path}: valid compare config; {len(setup.cells)} runs ({len(c.students)} student shape(s) x "
            f"{len(c.methods)} method row(s) x {len(c.seeds)} seed(s)), task {setup.base.data.task}, scored "
            f"on its {setup.split} split."
        )
    if "method" not in data:
        load_pipeline_config(str(path), overrides)
        return f"{path}: valid pipeline config."
    cfg = build_run_config(data)
    steps = cfg.plan.step_names(cfg)
    summary = f"method {cfg.method_name}, task {cfg.data.task}, plan {cfg.plan_name} ({', '.join(steps)})"
    from distil.plans.preflight import models_checked

    checked, times = models_checked(cfg, time_steps) if models else ([], [])
    said = f"models checked for {', '.join(checked)}" if checked else "models not checked"
    said += "".join("\n" + line for line in ([" estimated wall time:", *times] if time_steps else []))
    if check_data:
        from distil.tasks import load_task

        task = load_task(cfg.data, cfg.train.seed)
        return f"{path}: valid; {summary}; {said}; data: {task.describe()}."
    return f"{path}: valid; {summary}; {said}."
