"""The method registry: one line per method (each stage of a staged method is a method of its own)."""

from __future__ import annotations

from distil.errors import ConfigError, closest
from distil.methods.base import Method, MethodConfig, MethodContext
from distil.methods.distilbert import DistilBERTStyle
from distil.methods.finetune import Finetune
from distil.methods.gkd import GKD
from distil.methods.homodistil import HomoDistil
from distil.methods.homodistil_head import HomoDistilHead
from distil.methods.kd import KD
from distil.methods.lwd import LWD
from distil.methods.minilm import MiniLM
from distil.methods.minilmv2 import MiniLMv2
from distil.methods.ted import TED
from distil.methods.ted_filters import TEDFilters
from distil.methods.tinybert import TinyBERT
from distil.methods.tinybert_prediction import TinyBERTPrediction

__all__ = ["METHODS", "Method", "MethodConfig", "MethodContext", "get_method"]

METHODS: dict[str, type[Method]] = {
    "distilbert": DistilBERTStyle,
    "finetune": Finetune,
    "gkd": GKD,
    "homodistil": HomoDistil,
    "homodistil_head": HomoDistilHead,
    "kd": KD,
    "lwd": LWD,
    "minilm": MiniLM,
    "minilmv2": MiniLMv2,
    "ted": TED,
    "ted_filters": TEDFilters,
    "tinybert": TinyBERT,
    "tinybert_prediction": TinyBERTPrediction,
}


def get_method(name: str) -> type[Method]:
    """Look a method up by name, suggesting the closest one on a typo."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}.{closest(name, METHODS)} Known: {', '.join(METHODS)}.")
    return METHODS[name]
