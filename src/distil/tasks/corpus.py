"""Task-agnostic distillation data: unlabelled text packed into fixed-length token blocks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.config import DataConfig
from distil.data.corpus import build_blocks, collate_blocks, corpus_files

__all__ = ["CorpusTask", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$DISTIL_CACHE``, else ``~/.cache/distil``."""
    return Path(os.environ.get("DISTIL_CACHE", Path.home() / ".cache" / "distil"))


class CorpusTask:
    """Blocks of ``data.max_length`` tokens from ``data.corpus``; no labels and no dev metric.

    Blocks live in an on-disk, memory-mapped Arrow cache, so a corpus larger than memory works.
    """

    head = "base"
    name = "corpus"
    num_labels = 0
    is_regression = False
    main_metric: str | None = None

    def __init__(self, data: DataConfig, seed: int) -> None:
        assert data.corpus
        self.files = corpus_files(data.corpus)  # validates paths before any model is loaded
        self.max_blocks = data.max_blocks
        self.cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "blocks"
        self.train_set: Dataset = Dataset.from_dict({"input_ids": [], "idx": []})
        self.dev_set: Dataset | None = None
        self.pad_token_id = 0

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise and pack the corpus (or reuse the cached blocks)."""
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.train_set = build_blocks(
            self.files, tokenizer, max_length, cache_dir=self.cache_dir, max_blocks=self.max_blocks
        )

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack blocks into a batch."""
        return collate_blocks(rows, self.pad_token_id)

    def evaluate(self, model: PreTrainedModel, batch_size: int) -> dict[str, float]:
        """No dev metric: task-agnostic students are scored by fine-tuning them afterwards."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Corpus files and block count."""
        return {
            "task": self.name,
            "corpus_files": len(self.files),
            "train_blocks": len(self.train_set),
            "block_size": len(self.train_set[0]["input_ids"]) if len(self.train_set) else 0,
        }
