"""Bundled configs, config loading for the CLI, ``distil ls`` and ``distil validate``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from distil.config import RunConfig, build_run_config, read_yaml
from distil.errors import ConfigError, closest
from distil.schema import apply_overrides, from_dict

__all__ = ["bundled_configs", "describe_registry", "load_pipeline_config", "load_run_config", "validate"]


def bundled_configs() -> dict[str, Path]:
    """Bundled YAML configs by name (path below ``distil/configs`` without ``.yaml``)."""
    root = Path(str(resources.files("distil") / "configs"))
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def resolve_config(name_or_path: str) -> Path:
    """A config file path, or the bundled config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs()
    if name_or_path in bundled:
        return bundled[name_or_path]
    raise ConfigError(
        f"Config {name_or_path!r} is neither a file nor a bundled config.{closest(name_or_path, bundled)} "
        f"Bundled: {', '.join(bundled)}."
    )


def _raw(name_or_path: str | None, overrides: list[str]) -> dict[str, Any]:
    data = read_yaml(resolve_config(name_or_path)) if name_or_path else {}
    return apply_overrides(data, overrides)


def load_run_config(
    name_or_path: str | None, overrides: list[str], *, method: str | None = None
) -> RunConfig:
    """Load a run config; ``method`` (from ``--method`` or the subcommand) sets ``method.name``."""
    data = _raw(name_or_path, overrides)
    node = data.setdefault("method", {}) or {}
    if not isinstance(node, dict):
        raise ConfigError("method must be a mapping with at least `name`.")
    if method is not None:
        if node.get("name") not in (None, method):
            raise ConfigError(
                f"The config's method.name is {node['name']!r} but the command asks for {method!r}; "
                "drop one of them."
            )
        node["name"] = method
    data["method"] = node
    return build_run_config(data)


def load_pipeline_config(name_or_path: str | None, overrides: list[str]) -> Any:
    """Load the main job's config (defaults when no file is given)."""
    from distil.pipeline import PipelineConfig

    return from_dict(PipelineConfig, _raw(name_or_path, overrides))


def describe_registry() -> str:
    """The text of ``distil ls``."""
    from distil.data.tasks import GLUE_TASKS
    from distil.methods import METHODS

    lines = ["Methods:"]
    for name, cls in METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<12} {doc}")
    lines.append("Tasks:")
    for name, task in GLUE_TASKS.items():
        kind = "regression" if task.is_regression else f"{task.num_labels} classes"
        lines.append(f"  {name:<12} {kind}; metrics: {', '.join(task.metrics)}")
    lines.append("  custom       any .csv/.tsv/.jsonl: data.train_file, data.text_columns, data.label_column")
    lines.append("  squad        SQuAD v1.1 extractive QA (squad_v2: with unanswerable questions); EM, F1")
    lines.append("  lm           causal language modelling on data.corpus; perplexity on data.dev_file")
    lines.append("  corpus       task-agnostic distillation on unlabelled text (data.corpus)")
    lines.append("Bundled configs:")
    lines += [f"  {name}" for name in bundled_configs()]
    return "\n".join(lines)


def validate(name_or_path: str, overrides: list[str], *, check_data: bool = False) -> str:
    """Validate a run or pipeline config; returns a one-line summary or raises ``ConfigError``."""
    path = resolve_config(name_or_path)
    data = _raw(str(path), overrides)
    if "method" not in data:
        load_pipeline_config(str(path), overrides)
        return f"{path}: valid pipeline config."
    cfg = build_run_config(data)
    if check_data:
        from distil.tasks import load_task

        task = load_task(cfg.data, cfg.train.seed)
        return f"{path}: valid; method {cfg.method_name}; data: {task.describe()}."
    return f"{path}: valid; method {cfg.method_name}, task {cfg.data.task}."
