"""Tiny models and a tiny tokenizer for offline tests: built from configs, never downloaded."""

from __future__ import annotations

import copy
import functools
import json
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

_BERT_STYLE: dict[str, Any] = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
_ROBERTA_STYLE = {**_BERT_STYLE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
_LLAMA_STYLE: dict[str, Any] = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "attention_dropout": 0.0,
}

# One tiny config per family of `distil.models.families.FAMILIES` (a test checks that they match): 2 layers,
# 32 wide, 4 heads, FFN 64, 64 positions, dropout off (deterministic tests).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "bert": _BERT_STYLE,
    "roberta": _ROBERTA_STYLE,
    "xlm-roberta": _ROBERTA_STYLE,
    "electra": {**_BERT_STYLE, "embedding_size": 32},
    "deberta-v2": {
        **_BERT_STYLE,
        "relative_attention": True,
        "position_buckets": 8,
        "max_relative_positions": 16,
        "pos_att_type": ["p2c", "c2p"],
        "type_vocab_size": 0,
    },
    "distilbert": {
        "n_layers": 2,
        "dim": 32,
        "n_heads": 4,
        "hidden_dim": 64,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "max_position_embeddings": 64,
        "seq_classif_dropout": 0.0,
    },
    "gpt2": {
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
    },
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "qwen3": {**_LLAMA_STYLE, "head_dim": 8},  # its default head_dim (128) is not hidden / heads
    "gemma2": {**_LLAMA_STYLE, "head_dim": 8, "query_pre_attn_scalar": 8},
    # Sliding and global layers alternating at any depth, the window shorter than the longest test input.
    "gemma3_text": {
        **_LLAMA_STYLE,
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "sliding_window": 8,
        "sliding_window_pattern": 2,
    },
    "olmo2": {**_LLAMA_STYLE, "bos_token_id": 2, "eos_token_id": 3},
    "phi3": {**_LLAMA_STYLE, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "bos_token_id": 2, "eos_token_id": 3},
}
FAMILIES = tuple(TINY_CONFIGS)


def tiny_config(family: str, **overrides: Any) -> PretrainedConfig:
    """A tiny config of ``family`` (`TINY_CONFIGS`) with ``overrides`` applied."""
    kw: dict[str, Any] = {"vocab_size": VOCAB_SIZE, "pad_token_id": 0, **TINY_CONFIGS[family], **overrides}
    return AutoConfig.for_model(family, **kw)


@functools.cache
def _built(family: str, head: str, frozen_overrides: str) -> PreTrainedModel:
    torch.manual_seed(1234)
    cfg = tiny_config(family, **json.loads(frozen_overrides))
    cls = {
        "seq": AutoModelForSequenceClassification,
        "lm": AutoModelForCausalLM,
        "mlm": AutoModelForMaskedLM,
        "base": AutoModel,
    }[head]
    return cls.from_config(cfg, attn_implementation="eager").eval()


def tiny_model(family: str, head: str = "seq", **overrides: Any) -> PreTrainedModel:
    """A fresh deep copy of a cached tiny model (``head``: 'seq', 'lm', 'mlm' or 'base')."""
    # JSON as the cache key: overrides may hold dicts (RoPE parameters), which are not hashable.
    return copy.deepcopy(_built(family, head, json.dumps(overrides, sort_keys=True)))


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
