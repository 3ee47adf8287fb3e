"""Strict conversion between plain dicts (YAML) and typed config dataclasses.

Unknown keys and ill-typed values are errors that name the dotted field, the valid choices and the
closest valid key, so a typo in a config never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from distil.errors import ConfigError, closest

__all__ = ["apply_overrides", "from_dict", "parse_override", "to_dict"]

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Args:
        cls: A dataclass type whose fields carry type annotations.
        data: The mapping read from YAML (``None`` means all defaults).
        where: Dotted prefix of this node, used in error messages.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping of keys to values, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = closest(str(key), fields)
            raise ConfigError(f"Unknown config key {name!r}.{hint} Valid keys here: {', '.join(fields)}.")
        kwargs[key] = _convert(hints[key], value, name)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field without default was left out
        raise ConfigError(f"{where or 'config'}: {err}") from err


def _convert(tp: Any, value: Any, name: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}.")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = closest(str(value), [str(c) for c in choices])
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}.")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, f"{name}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}.")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, name)  # type: ignore[arg-type]
    return _scalar(tp, value, name)


def _scalar(tp: Any, value: Any, name: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{name}: unsupported field type {tp!r}.")
    raise ConfigError(f"{name} must be of type {tp.__name__}, got {value!r}.")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict (YAML-ready) form of a config dataclass."""
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'train.lr=3e-5'`` into its dotted key and a YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"Override {text!r} must look like section.key=value, e.g. train.lr=3e-5.")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as err:
        raise ConfigError(f"Override {text!r}: the value is not valid YAML ({err}).") from err
    # YAML 1.1 reads 3e-5 (no dot) as a string; users mean a number.
    if isinstance(value, str) and any(c in value for c in "eE."):
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw config mapping, in place, and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Override {text!r}: {part!r} is a value, not a section.")
            node = child
        node[path[-1]] = value
    return data
