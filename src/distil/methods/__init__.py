"""The method registry: one line per method."""

from __future__ import annotations

from typing import Any

from distil.errors import ConfigError, closest
from distil.methods.base import Method, MethodContext
from distil.methods.distilbert import DistilBERTStyle
from distil.methods.finetune import Finetune
from distil.methods.homodistil import HomoDistil
from distil.methods.kd import KD
from distil.methods.lwd import LWD
from distil.methods.minilm import MiniLM
from distil.methods.minilmv2 import MiniLMv2
from distil.methods.ted import TED
from distil.methods.tinybert import TinyBERT

__all__ = ["METHODS", "Method", "MethodContext", "get_method", "method_name"]

METHODS: dict[str, type[Method]] = {
    "distilbert": DistilBERTStyle,
    "finetune": Finetune,
    "homodistil": HomoDistil,
    "kd": KD,
    "lwd": LWD,
    "minilm": MiniLM,
    "minilmv2": MiniLMv2,
    "ted": TED,
    "tinybert": TinyBERT,
}


def get_method(name: str) -> type[Method]:
    """Look a method up by name, suggesting the closest one on a typo."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}.{closest(name, METHODS)} Known: {', '.join(METHODS)}.")
    return METHODS[name]


def method_name(method_cfg: Any) -> str:
    """The registry name of a method config instance."""
    for name, cls in METHODS.items():
        if type(method_cfg) is cls.Config:
            return name
    raise ConfigError(f"{type(method_cfg).__name__} is not the config of a registered method.")
