"""Tiny models and a tiny tokenizer for offline tests: built from configs, never downloaded."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertTokenizerFast,
    PretrainedConfig,
    PreTrainedModel,
)

ASSETS = Path(__file__).parent / "assets"
VOCAB_SIZE = 128  # >= len(assets/vocab.txt); the models' embedding tables are this large

ENCODERS = ("bert", "roberta", "xlm-roberta", "deberta-v2", "distilbert", "electra")
DECODERS = ("gpt2", "llama")
FAMILIES = ENCODERS + DECODERS


def tiny_config(family: str, **overrides: Any) -> PretrainedConfig:
    """A 2-layer, 32-wide, 4-head config of ``family`` with dropout off (deterministic tests)."""
    common: dict[str, Any] = {"vocab_size": VOCAB_SIZE, "pad_token_id": 0}
    if family == "distilbert":
        kw = {
            "n_layers": 2,
            "dim": 32,
            "n_heads": 4,
            "hidden_dim": 64,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "max_position_embeddings": 64,
            "seq_classif_dropout": 0.0,
        }
    elif family == "gpt2":
        kw = {
            "n_layer": 2,
            "n_embd": 32,
            "n_head": 4,
            "n_positions": 64,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "summary_first_dropout": 0.0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        }
    elif family == "llama":
        kw = {
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "attention_dropout": 0.0,
        }
    else:
        kw = {
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
        if family == "electra":
            kw["embedding_size"] = 32
        if family == "deberta-v2":
            kw.update(
                {
                    "relative_attention": True,
                    "position_buckets": 8,
                    "max_relative_positions": 16,
                    "pos_att_type": ["p2c", "c2p"],
                    "type_vocab_size": 0,
                }
            )
        if family in ("roberta", "xlm-roberta"):
            kw.update({"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2})
            common["pad_token_id"] = 1
    kw.update(common)
    kw.update(overrides)
    return AutoConfig.for_model(family, **kw)


@functools.cache
def _built(family: str, head: str, frozen_overrides: tuple[tuple[str, Any], ...]) -> PreTrainedModel:
    torch.manual_seed(1234)
    cfg = tiny_config(family, **dict(frozen_overrides))
    cls = {
        "seq": AutoModelForSequenceClassification,
        "lm": AutoModelForCausalLM,
        "mlm": AutoModelForMaskedLM,
        "base": AutoModel,
    }[head]
    return cls.from_config(cfg, attn_implementation="eager").eval()


def tiny_model(family: str, head: str = "seq", **overrides: Any) -> PreTrainedModel:
    """A fresh deep copy of a cached tiny model (``head``: 'seq', 'lm', 'mlm' or 'base')."""
    return copy.deepcopy(_built(family, head, tuple(sorted(overrides.items()))))


def tiny_tokenizer() -> BertTokenizerFast:
    """A WordPiece tokenizer over ``tests/assets/vocab.txt``."""
    words = (ASSETS / "vocab.txt").read_text().split("\n")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(w for w in words if w)}, do_lower_case=True)


def save_tiny_pair(tmp: Path, family: str = "bert", num_labels: int = 2, **overrides: Any) -> Path:
    """Save a tiny sequence-classification model with the tiny tokenizer under ``tmp`` and return the path."""
    model = tiny_model(family, "seq", num_labels=num_labels, **overrides)
    model.save_pretrained(tmp)
    tiny_tokenizer().save_pretrained(tmp)
    return tmp
