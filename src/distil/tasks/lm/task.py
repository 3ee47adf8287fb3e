"""Causal language modelling (``data.task=lm``): train on corpus blocks, report sliding-window perplexity.

Training text (``data.corpus``) is packed into blocks of ``data.max_length`` tokens with the tokenizer's
own template (`distil.tasks.corpus.blocks.build_blocks`: nothing around GPT-2 blocks, ``<s>`` before Llama
blocks; documents separated by the end-of-text token). ``collate`` adds **already shifted** labels:
``labels[:, t]`` is the token at ``t + 1`` when both are real tokens, else -100. So the shared
``task_loss(logits, labels)`` is the next-token cross-entropy, and ``labels != -100`` marks the positions
whose prediction is scored (the token-level KD mask). Do not pass these labels to a Hugging Face model's
own ``labels=`` argument, which shifts again.

Evaluation: perplexity of ``data.dev_file`` (e.g. WikiText-2's test text) with a window of
``data.max_length`` tokens advancing by ``data.eval_stride`` (`distil.tasks.lm.perplexity`). Checkpoint
selection needs a higher-is-better key, so ``main_metric`` is ``neg_perplexity``; ``perplexity`` is
reported beside it. ``data.dev_subset`` scores a seeded subset of the windows (each keeps its context);
``data.train_subset`` (or ``data.max_blocks``) limits the training blocks. Only decoder families can
run this task: an encoder checkpoint is rejected in ``prepare`` (before training), because its "causal
LM" head would see the tokens it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from distil.data.readers import subset
from distil.data.splits import held_out_count, split_rows
from distil.errors import ConfigError, DataError
from distil.evaluation.shards import Shard
from distil.files import default_cache_dir
from distil.losses import next_token_labels
from distil.models.families import family_of
from distil.tasks.base import TaskFlags
from distil.tasks.corpus.blocks import build_blocks, collate_blocks, corpus_files
from distil.tasks.corpus.task import CorpusData
from distil.tasks.lm.perplexity import perplexity_windows, windowed_perplexity
from distil.types import Batch

__all__ = ["LMData", "LMTask", "check_causal"]


@dataclass
class LMData(CorpusData):
    """The data section of causal language modelling (``data.task=lm``).

    Attributes:
        max_length: Tokens per training block and per perplexity window.
        dev_file: The text whose perplexity is reported (e.g. WikiText-2's test text); with
            ``split_dev`` the held-out training blocks are the dev split and this text is scored as
            ``test`` (metrics suffixed ``_test``).
        train_subset: Use a seeded random subset of this many training blocks.
        dev_subset: Score a seeded subset of this many perplexity windows (each keeps its context).
        eval_stride: Tokens the perplexity window advances by (only they are scored, with up to
            ``max_length`` tokens of context); default ``max_length // 2``.
    """

    task: str = "lm"
    dev_file: str | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    eval_stride: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_stride is not None and not 1 <= self.eval_stride <= self.max_length:
            raise ConfigError(
                f"data.eval_stride must be in [1, data.max_length={self.max_length}], got {self.eval_stride}."
            )

    def metric_names(self) -> tuple[str, ...]:
        """Perplexity and its parts, on held-out blocks (``split_dev``) and/or the dev text."""
        keys = ("perplexity", "neg_perplexity", "nll", "eval_tokens")
        if self.split_dev is not None:
            return keys + tuple(f"{k}_test" for k in keys) if self.dev_file else keys
        return keys if self.dev_file else ()


def check_causal(config: Any, what: str) -> None:
    """Reject an encoder-only family for causal language modelling.

    Raises:
        ConfigError: ``config`` is of a bidirectional family (BERT, RoBERTa, DeBERTa, ...).
        ModelError: The family is not supported at all.
    """
    if not family_of(config).causal:
        raise ConfigError(
            f"data.task=lm trains a causal language model, but {what} is a {config.model_type!r} encoder, "
            "which attends to the tokens it should predict. Use a decoder (GPT-2, Llama, Mistral, Qwen2)."
        )


class LMTask:
    """Causal language modelling on text blocks; perplexity on a held-out text."""

    kind: ClassVar[str] = "lm"
    names: ClassVar[tuple[str, ...]] = ("lm",)
    Config: ClassVar[type[LMData]] = LMData
    head: ClassVar[str] = "lm"
    labelled: ClassVar[bool] = True  # next-token labels come with every block
    cacheable_teacher: ClassVar[bool] = False  # [tokens, vocab] logits per block
    name = "lm"
    num_labels = 0
    is_regression = False
    group_by_length = False  # every block has max_length tokens

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """The data-section fields of the command-line task options (`distil.tasks.base.TaskFlags`)."""
        if not flags.file:
            raise ConfigError("--task lm needs --file: the text whose perplexity is reported.")
        return {"corpus": [flags.file], "dev_file": flags.file}

    def __init__(self, data: LMData, seed: int, *, eval_only: bool = False) -> None:
        assert data.corpus
        self.files = corpus_files(data.corpus)  # validates paths before any model is loaded
        self.dev_path = Path(data.dev_file).expanduser() if data.dev_file else None
        if self.dev_path is not None and not self.dev_path.is_file():
            raise DataError(f"data.dev_file {str(self.dev_path)!r} does not exist; give the evaluation text.")
        scored = self.dev_path is not None or data.split_dev is not None
        self.main_metric: str | None = "neg_perplexity" if scored else None
        self.test_set: Dataset | None = None  # the dev text, when split_dev makes the dev split
        self.notes: list[str] = []
        self.split: dict[str, Any] = {}
        self.settings, self.seed, self.eval_only = data, seed, eval_only
        self.cache_root: Path | None = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        self.cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "blocks"
        self.train_set: Dataset = Dataset.from_dict({"input_ids": [], "idx": []})
        self.dev_set: Dataset | None = None
        self.pad_token_id = 0
        self.stride = 0

    def check_model(self, config: Any, what: str) -> None:
        """Setup hook: reject an encoder before any training (and before its head is checked)."""
        check_causal(config, what)

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Check the family, pack the corpus into blocks and cut the dev text into scoring windows.

        Raises:
            ConfigError: The checkpoint the tokenizer was loaded from is an encoder.
            DataError: The dev text has fewer than two tokens.
        """
        # build_run loads the tokenizer from the model checkpoint, so its folder names the family.
        source = str(getattr(tokenizer, "name_or_path", "") or "")
        if source:
            try:
                config = AutoConfig.from_pretrained(source)
            except (OSError, ValueError):
                config = None  # a tokenizer without a model beside it: nothing to check here
            if config is not None:
                check_causal(config, f"the checkpoint {source!r}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        s = self.settings
        if not self.eval_only:
            blocks = build_blocks(
                self.files, tokenizer, max_length, cache_dir=self.cache_dir, max_blocks=s.max_blocks
            )
            held: Dataset | None = None
            if s.split_dev is not None:  # whole blocks held out: each a window scored from its 2nd token
                keep, out = split_rows(len(blocks), held_out_count(len(blocks), s.split_dev), s.split_seed)
                held = blocks.select(out)
                blocks = blocks.select(keep)
                windows = {"input_ids": held["input_ids"][:], "score_from": [1] * len(held)}
                held = Dataset.from_dict(windows | {"idx": list(range(len(held)))})
                self.split = {
                    "split_dev": s.split_dev,
                    "split_seed": s.split_seed,
                    "held_out_blocks": len(out),
                }
            self.train_set = subset(blocks, s.train_subset, self.seed)
            if held is not None:
                self.dev_set = subset(held, s.dev_subset, self.seed)
        if self.dev_path is None:
            return
        ids = tokenizer(self.dev_path.read_text(encoding="utf-8"), verbose=False)["input_ids"]
        self.stride = s.eval_stride or max(1, max_length // 2)
        try:
            windows = Dataset.from_dict(perplexity_windows(ids, max_length, self.stride))
        except ValueError as err:
            raise DataError(f"data.dev_file {str(self.dev_path)!r}: {err}") from None
        if self.dev_set is not None:
            self.test_set = subset(windows, s.dev_subset, self.seed)
        else:
            self.dev_set = subset(windows, s.dev_subset, self.seed)

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Stack blocks and add the shifted next-token ``labels`` (-100 where nothing is predicted)."""
        batch = Batch.from_mapping(collate_blocks(rows, self.pad_token_id))
        return batch.replace(labels=next_token_labels(batch.input_ids, batch.attention_mask))

    def evaluate(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """Sliding-window perplexity on ``data.dev_file`` (empty without one)."""
        if self.dev_set is None:
            return {}
        check_causal(model.config, f"the model {type(model).__name__}")
        metrics = windowed_perplexity(model, self.dev_set, batch_size, shard or Shard())
        if self.test_set is not None:
            test = windowed_perplexity(model, self.test_set, batch_size, shard or Shard())
            metrics |= {f"{k}_test": v for k, v in test.items()}
        return metrics

    def describe(self) -> dict[str, Any]:
        """Corpus, block count and the perplexity set-up."""
        out: dict[str, Any] = {
            "task": self.name,
            "hub_datasets": [],  # a local text corpus
            "corpus_files": len(self.files),
            "train_blocks": len(self.train_set),
        }
        if self.dev_path is not None:
            out |= {"dev_file": str(self.dev_path), "eval_stride": self.stride}
        out["eval_windows"] = len(self.dev_set) if self.dev_set is not None else 0
        if self.split:
            out["split"] = self.split | {
                "test_windows": len(self.test_set) if self.test_set is not None else 0
            }
        return out
