"""Task-agnostic distillation data: unlabelled text packed into fixed-length token blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.errors import ConfigError
from distil.evaluation.shards import Shard
from distil.files import default_cache_dir
from distil.tasks.base import DataCommon, TaskFlags
from distil.tasks.corpus.blocks import build_blocks, collate_blocks, corpus_files
from distil.types import Batch

__all__ = ["CorpusData", "CorpusTask"]


@dataclass
class CorpusData(DataCommon):
    """The data section of task-agnostic distillation on unlabelled text (``data.task=corpus``).

    Attributes:
        max_length: Tokens per block.
        corpus: Text files or folders (plain text, or WikiExtractor ``<doc>`` files), packed into blocks
            of ``max_length`` tokens.
        max_blocks: Use at most this many blocks (a fixed data budget).
        cache_dir: Where tokenised blocks are cached (default ``$DISTIL_CACHE`` or ``~/.cache/distil``);
            reused when files, tokenizer and block size are unchanged.
    """

    task: str = "corpus"
    corpus: list[str] | None = None
    max_blocks: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.corpus:
            raise ConfigError(f"data.task={self.task} needs data.corpus: a list of text files or folders.")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ConfigError(f"data.max_blocks must be >= 1, got {self.max_blocks}.")
        if self.task == "corpus" and self.split_dev is not None:
            raise ConfigError(
                "data.split_dev: a task-agnostic corpus run has no evaluation to hold rows out for; unset it."
            )


class CorpusTask:
    """Unlabelled text packed into token blocks, for task-agnostic distillation; no dev metric.

    Blocks live in an on-disk, memory-mapped Arrow cache, so a corpus larger than memory works.
    """

    kind: ClassVar[str] = "corpus"
    names: ClassVar[tuple[str, ...]] = ("corpus",)
    Config: ClassVar[type[CorpusData]] = CorpusData
    head: ClassVar[str] = "base"
    labelled: ClassVar[bool] = False
    cacheable_teacher: ClassVar[bool] = False
    name = "corpus"
    num_labels = 0
    is_regression = False
    main_metric: str | None = None
    group_by_length = False  # every block has max_length tokens

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """Refused: a corpus has no evaluation of its own."""
        raise ConfigError("--task corpus has no evaluation; give a GLUE task, custom, squad, squad_v2 or lm.")

    def __init__(self, data: CorpusData, seed: int, *, eval_only: bool = False) -> None:
        assert data.corpus
        self.files = corpus_files(data.corpus)  # validates paths before any model is loaded
        self.max_blocks = data.max_blocks
        self.cache_root: Path | None = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        self.cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "blocks"
        self.train_set: Dataset = Dataset.from_dict({"input_ids": [], "idx": []})
        self.dev_set: Dataset | None = None
        self.pad_token_id = 0
        self.notes: list[str] = []

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Tokenise and pack the corpus (or reuse the cached blocks)."""
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.train_set = build_blocks(
            self.files, tokenizer, max_length, cache_dir=self.cache_dir, max_blocks=self.max_blocks
        )

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Stack blocks into a batch."""
        return Batch.from_mapping(collate_blocks(rows, self.pad_token_id))

    def evaluate(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """No dev metric: task-agnostic students are scored by fine-tuning them afterwards."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Corpus files and block count."""
        return {
            "task": self.name,
            "hub_datasets": [],  # local text files
            "corpus_files": len(self.files),
            "train_blocks": len(self.train_set),
            "block_size": len(self.train_set[0]["input_ids"]) if len(self.train_set) else 0,
        }

    def check_model(self, config: Any, what: str) -> None:
        """Any supported family can be distilled on a corpus."""
        return None
