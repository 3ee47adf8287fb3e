"""Instruction and chat data (``data.task=chat``): conversations rendered with a chat template.

Rows are conversations (``messages``) or prompt-completion pairs (`distil.tasks.chat.reader`), rendered
with the tokenizer's chat template or ``data.chat_template`` (`distil.tasks.chat.render`). One
conversation is one row, right-padded in its batch, so no conversation ever attends to another. The
labels are shifted next-token ids on **assistant tokens only** (-100 elsewhere), so the task loss and
every token-level distillation term count only what the model must produce; the rest of a
conversation is context. Each row also carries ``prompt_length``: the tokens before its last assistant
turn (the last that starts within ``data.max_length``), which on-policy distillation completes
(`distil.methods.gkd`).

Evaluation: perplexity of the dev conversations' assistant tokens (``neg_perplexity`` selects
checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.data.batching import collate
from distil.data.readers import subset
from distil.data.splits import held_out_count, split_rows
from distil.errors import ConfigError
from distil.evaluation.shards import Shard
from distil.files import default_cache_dir
from distil.losses.baselines import IGNORE_INDEX, scored_next_token_labels
from distil.progress import Phase
from distil.tasks.base import DataCommon, TaskFlags
from distil.tasks.chat.reader import Message, conversations, read_rows
from distil.tasks.chat.render import render, resolve_template
from distil.tasks.lm.perplexity import perplexity_metrics
from distil.tasks.lm.task import check_causal
from distil.types import Batch

__all__ = ["ChatData", "ChatTask"]


@dataclass
class ChatData(DataCommon):
    """The data section of instruction and chat data (``data.task=chat``).

    Attributes:
        train_file: Conversations to train on: a .jsonl, .json or .parquet file, a folder written by
            ``datasets``' ``save_to_disk``, or a Hugging Face dataset id (online, or in the datasets cache).
        dev_file: Conversations to evaluate on (same forms).
        train_split: The split of a dataset id or a ``DatasetDict`` folder to train on.
        dev_split: The split of ``dev_file`` to evaluate on.
        chat_template: A built-in template name (``chatml``) or a .jinja file; default: the tokenizer's own.
            It is saved with the student's tokenizer.
        train_subset: Use a seeded random subset of this many training conversations.
        dev_subset: Evaluate on a seeded random subset of this many dev conversations.
        group_by_length: Batch conversations of similar length together (less padding).
        cache_dir: Where the teacher's top-k cache is kept (default ``$DISTIL_CACHE`` or
            ``~/.cache/distil``).
    """

    task: str = "chat"
    train_file: str | None = None
    dev_file: str | None = None
    train_split: str = "train"
    dev_split: str = "test"
    chat_template: str | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_file and not self.dev_file:
            raise ConfigError(
                "data.task=chat needs data.train_file (conversations or prompt-completion rows)."
            )

    def metric_names(self) -> tuple[str, ...]:
        """Perplexity of the assistant tokens (and on ``dev_file`` as ``_test`` beside ``split_dev``)."""
        keys = ("perplexity", "neg_perplexity", "nll", "eval_tokens")
        if self.split_dev is not None:
            return keys + tuple(f"{k}_test" for k in keys) if self.dev_file else keys
        return keys if self.dev_file else ()


class ChatTask:
    """Chat or instruction data; the loss and distillation count the assistant's tokens only."""

    kind: ClassVar[str] = "chat"
    names: ClassVar[tuple[str, ...]] = ("chat",)
    Config: ClassVar[type[ChatData]] = ChatData
    head: ClassVar[str] = "lm"
    labelled: ClassVar[bool] = True
    cacheable_teacher: ClassVar[bool] = False  # [tokens, vocab] logits per row
    name = "chat"
    num_labels = 0
    is_regression = False

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """``--file``: the conversations to score."""
        if not flags.file:
            raise ConfigError("--task chat needs --file: the conversations whose assistant turns are scored.")
        return {"dev_file": flags.file, "train_file": None if eval_only else flags.file}

    def __init__(self, data: ChatData, seed: int, *, eval_only: bool = False) -> None:
        self.settings, self.seed, self.eval_only = data, seed, eval_only
        self.group_by_length = data.group_by_length
        self.raw: dict[str, list[list[Message]]] = {}
        if data.train_file and not eval_only:
            rows = read_rows(data.train_file, data.train_split, "data.train_file")
            self.raw["train"] = conversations(rows, data.train_file)
        if data.dev_file:
            rows = read_rows(data.dev_file, data.dev_split, "data.dev_file")
            self.raw["dev"] = conversations(rows, data.dev_file)
        if eval_only and "dev" not in self.raw:
            raise ConfigError("Evaluating a chat task needs data.dev_file.")
        scored = "dev" in self.raw or data.split_dev is not None
        self.main_metric: str | None = "neg_perplexity" if scored else None
        self.cache_root: Path | None = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
        self.train_set: Dataset = Dataset.from_dict({"input_ids": [], "idx": []})
        self.dev_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.notes: list[str] = []
        self.split: dict[str, Any] = {}
        self.template = ""
        self.pad_token_id = 0

    def check_model(self, config: Any, what: str) -> None:
        """Setup hook: chat data trains a causal LM, never an encoder."""
        check_causal(config, what)

    def _tokenise(self, convs: list[list[Message]], source: str, max_length: int, tok: Any) -> Dataset:
        columns: dict[str, list[Any]] = {"input_ids": [], "assistant": [], "prompt_length": [], "idx": []}
        dropped = 0
        for n, conv in enumerate(convs, 1):
            r = render(tok, self.template, conv, f"{source}, row {n}")
            ids, assistant = r.input_ids[:max_length], r.assistant[:max_length]
            if not any(assistant[1:]):  # nothing the truncated row could be scored on
                dropped += 1
                continue
            columns["input_ids"].append(ids)
            columns["assistant"].append(assistant)
            columns["prompt_length"].append(r.prompt_length(max_length))
            columns["idx"].append(len(columns["idx"]))
        if dropped:
            self.notes.append(
                f"{source}: {dropped} of {len(convs)} conversations keep no assistant token within "
                f"data.max_length={max_length} and were dropped"
            )
        if not columns["idx"]:
            raise ConfigError(f"{source}: no conversation keeps an assistant token; raise data.max_length.")
        return Dataset.from_dict(columns)

    def prepare(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        """Resolve the chat template (set on the tokenizer, so the student's carries it) and tokenise."""
        s = self.settings
        source = str(getattr(tokenizer, "name_or_path", "") or "the tokenizer")
        self.template = resolve_template(tokenizer, s.chat_template, source)
        tokenizer.chat_template = self.template
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        dev = (
            self._tokenise(self.raw["dev"], str(s.dev_file), max_length, tokenizer)
            if "dev" in self.raw
            else None
        )
        if "train" in self.raw:
            train = self._tokenise(self.raw["train"], str(s.train_file), max_length, tokenizer)
            if s.split_dev is not None:
                keep, out = split_rows(len(train), held_out_count(len(train), s.split_dev), s.split_seed)
                self.split = {"split_dev": s.split_dev, "split_seed": s.split_seed, "held_out": len(out)}
                held = train.select(out)
                train = train.select(keep)
                self.test_set, dev = dev, held
            self.train_set = subset(train, s.train_subset, self.seed)
        self.dev_set = subset(dev, s.dev_subset, self.seed) if dev is not None else None

    def collate(self, rows: list[dict[str, Any]]) -> Batch:
        """Right-pad the conversations; labels on assistant tokens; each row's prompt length."""
        batch = collate([{"input_ids": r["input_ids"], "idx": r["idx"]} for r in rows], self.pad_token_id)
        assistant = torch.zeros_like(batch["input_ids"])
        for i, r in enumerate(rows):
            assistant[i, : len(r["assistant"])] = torch.tensor(r["assistant"])
        return Batch.from_mapping(batch).replace(
            labels=scored_next_token_labels(batch["input_ids"], assistant),
            prompt_lengths=torch.tensor([int(r["prompt_length"]) for r in rows]),
        )

    def evaluate(
        self, model: PreTrainedModel, batch_size: int, shard: Shard | None = None
    ) -> dict[str, float]:
        """Perplexity of the assistant tokens of the dev conversations (and ``_test`` ones)."""
        if self.dev_set is None:
            return {}
        metrics = completion_perplexity(model, self.dev_set, self.collate, batch_size, shard or Shard())
        if self.test_set is not None:
            test = completion_perplexity(model, self.test_set, self.collate, batch_size, shard or Shard())
            metrics |= {f"{k}_test": v for k, v in test.items()}
        return metrics

    def describe(self) -> dict[str, Any]:
        """Sources, conversation counts and where the template came from."""
        s = self.settings
        hub = [f for f in (s.train_file, s.dev_file) if f and not Path(f).expanduser().exists()]
        out: dict[str, Any] = {
            "task": self.name,
            "hub_datasets": hub,
            "train_file": s.train_file,
            "dev_file": s.dev_file,
            "chat_template": s.chat_template or "the tokenizer's",
            "train_conversations": len(self.train_set),
            "eval_conversations": len(self.dev_set) if self.dev_set is not None else 0,
        }
        if self.split:
            out["split"] = self.split
        return out


@torch.no_grad()
def completion_perplexity(
    model: PreTrainedModel, rows: Dataset, collate: Any, batch_size: int, shard: Shard
) -> dict[str, float]:
    """Perplexity of the tokens ``collate``'s labels score (the assistant's), over ``rows``.

    Returns:
        ``perplexity``, ``neg_perplexity``, ``nll`` (mean per scored token, nats) and ``eval_tokens``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = [list(range(i, min(i + batch_size, len(rows)))) for i in range(0, len(rows), batch_size)]
    mine, padding = shard.take(chunks)
    todo = [*mine, *chunks[:1] * padding]
    total, count = 0.0, 0
    phase = Phase(f"scoring {len(rows)} conversations", len(todo), enabled=shard.rank == 0)
    for n, chunk in enumerate(todo):
        batch = collate([rows[i] for i in chunk]).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        phase.update()
        if n >= len(mine):
            continue  # a padding pass: every process runs as many forward passes
        assert batch.labels is not None
        nll = F.cross_entropy(
            logits.float().transpose(1, 2), batch.labels, reduction="sum", ignore_index=IGNORE_INDEX
        )
        total += float(nll)
        count += int((batch.labels != IGNORE_INDEX).sum())
    phase.close()
    model.train(was_training)
    return perplexity_metrics(total, count, shard)
