"""Build a typed, checked ``RunConfig`` from YAML: the one place where the registries meet the schema.

The sections are dataclasses (`distil.run_config`); three of them are chosen by name, each the way the
``method:`` section always was: ``method.name`` picks a method from `distil.methods.METHODS`,
``data.task`` a task kind from `distil.tasks.TASKS` (each kind has only its own data fields), and
``plan.name`` a plan from `distil.plans.PLANS` (default: the method's usual plan). Unknown keys and
ill-typed values are errors naming the field; then every check that needs two sections runs
(`distil.training.checks.check_run` and the plan's ``check_run``), so a config that builds is one
training accepts as far as can be known without loading models or data.
"""

from __future__ import annotations

import dataclasses
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from distil.errors import ConfigError, closest
from distil.files import not_utf8
from distil.methods import get_method
from distil.plans import default_plan, get_plan
from distil.run_config import EvalConfig, ModelsConfig, RunConfig, StudentConfig, TrainConfig
from distil.schema import apply_overrides, from_dict, parse_override
from distil.tasks import task_class
from distil.training.checks import check_run
from distil.training.engines import engine_class

__all__ = [
    "EvalConfig",
    "ModelsConfig",
    "RunConfig",
    "StudentConfig",
    "TrainConfig",
    "build_run_config",
    "bundled_configs",
    "load_config",
    "read_config",
    "read_yaml",
    "resolve_config",
]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    bad = not_utf8(path)
    if bad is not None:
        raise ConfigError(f"Config file {path}: not UTF-8 text at {bad}; re-save it as UTF-8.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping at the top level.")
    return data


def _named_node(data: dict[str, Any], section: str) -> dict[str, Any]:
    node = data.pop(section, None) or {}
    if not isinstance(node, dict):
        raise ConfigError(f"{section} must be a mapping, got {node!r}.")
    return dict(node)


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Build and check a ``RunConfig`` from a raw mapping.

    Raises:
        ConfigError: An unknown name or key, an ill-typed or out-of-range value, or sections that do not
            fit together (e.g. a method that needs labels on a corpus).
    """
    data = dict(data)
    _refuse_removed_keys(data)
    method_node = _named_node(data, "method")
    name = method_node.pop("name", None)
    if name is None:
        raise ConfigError("method.name is required; `distil ls` lists the methods.")
    method = from_dict(get_method(str(name)).Config, method_node, "method")
    data_node = _named_node(data, "data")
    task = data_node.setdefault("task", "sst2")
    data_cfg = from_dict(task_class(str(task)).Config, data_node, "data")
    plan_node = _named_node(data, "plan")
    plan_name = plan_node.pop("name", None) or default_plan(str(name), method, data_cfg.task)
    plan = from_dict(get_plan(str(plan_name)), plan_node, "plan")
    engine_node = _named_node(data, "engine")
    engine_cls = engine_class(str(engine_node.setdefault("name", "auto")))
    engine = from_dict(engine_cls.Options, engine_node, "engine")
    cfg = from_dict(RunConfig, {**data, "data": data_cfg, "method": method, "plan": plan, "engine": engine})
    check_run(cfg)
    plan.check_run(cfg)
    return cfg


# Keys that older configs may hold, with what replaced them: an error that says so beats "unknown key".
_REMOVED = {
    ("train", "tensorboard"): "train.tensorboard was replaced by train.report_to: set train.report_to=[] to "
    "turn TensorBoard off (or list the trackers to report to).",
    ("train", "parallel"): "train.parallel moved to the engine section: set engine.name (auto, none, ddp or "
    "fsdp), e.g. engine.name=fsdp.",
    ("train", "cpu_offload"): "train.cpu_offload moved to the engine section: set engine.name=fsdp "
    "engine.cpu_offload=true.",
    ("train", "ram_efficient_loading"): "train.ram_efficient_loading moved to the engine section: set "
    "engine.name=fsdp engine.ram_efficient_loading=true.",
}


def _refuse_removed_keys(data: dict[str, Any]) -> None:
    for (section, key), message in _REMOVED.items():
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            raise ConfigError(message)


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
    if path.suffix in (".yaml", ".yml") or path.is_absolute():
        raise ConfigError(f"Config file {path} does not exist.")
    raise ConfigError(
        f"Config {name_or_path!r} is neither a file nor a bundled config.{closest(name_or_path, bundled)} "
        f"Bundled: {', '.join(bundled)}."
    )


def read_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A config file's mapping with ``key=value`` overrides applied, and notes on what was dropped.

    Switching a file's method (``method.name=lwd`` on ``custom/kd``) keeps the file's method settings
    the new method shares (``temperature``, ``layer_map``) and drops the others (``kd``'s ``alpha``),
    each dropped key named in a note; the file's plan section goes too when it was the old method's usual
    plan (TED's stages), and so do its teacher caches (``train.cache_teacher``). A key given as an
    override is never dropped: it is checked against the new method like any other.

    Args:
        path: A YAML file, the name of a bundled config, or ``None`` for the defaults.
        overrides: Dotted ``key=value`` strings, as on the command line.
    """
    source = resolve_config(str(path)) if path else None
    data = read_yaml(source) if source else {}
    before = data.get("method")
    old = dict(before) if isinstance(before, dict) else {}
    apply_overrides(data, overrides or [])
    node = data.get("method")
    if not isinstance(node, dict) or old.get("name") is None or node.get("name") in (None, old["name"]):
        return data, []
    new_name, old_name = node["name"], old["name"]
    get_method(str(new_name))  # an unknown name is its own error, with the closest known one
    given = {tuple(parse_override(o)[0]) for o in overrides or []}
    keep = {f.name for f in dataclasses.fields(get_method(str(new_name)).Config) if f.init}
    notes = []
    for key in [k for k in node if k != "name" and k not in keep and ("method", k) not in given]:
        if key in old and node[key] == old[key]:
            del node[key]
            notes.append(f"method.{key} from {path} does not apply to method {new_name!r}; dropped.")
    train = data.get("train")
    for key in ("cache_teacher", "cache_teacher_topk"):  # caches of what the old method read of the teacher
        if isinstance(train, dict) and train.get(key) and ("train", key) not in given:
            del train[key]
            notes.append(
                f"train.{key} from {path} was set for method {old_name!r}; dropped (set it again "
                f"if method {new_name!r} can use it)."
            )
    plan = data.get("plan")
    task = str((data.get("data") or {}).get("task", "sst2"))
    if isinstance(plan, dict) and not any(k[0] == "plan" for k in given):
        usual = default_plan(str(old_name), None, task)
        if plan.get("name") == usual != default_plan(str(new_name), None, task):
            del data["plan"]
            what = f"plan {usual!r} (method {old_name!r}'s stages) from {path}"
            notes.append(f"{what} does not apply; dropped.")
    return data, notes


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a run config and apply ``key=value`` overrides (switching the method: `read_config`).

    Args:
        path: A YAML file, the name of a bundled config (``glue/sst2/kd``; `bundled_configs`), or ``None``
            for the defaults.
        overrides: Dotted ``key=value`` strings, as on the command line.
    """
    data, notes = read_config(path, overrides)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return build_run_config(data)
