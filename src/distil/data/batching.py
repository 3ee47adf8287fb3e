"""Tokenisation, dynamic padding and the deterministic batch order of an epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from distil.data.spec import TaskSpec
from distil.progress import Phase

if TYPE_CHECKING:  # only for annotations; keeps `import distil.data` from loading transformers
    from transformers import PreTrainedTokenizerBase

__all__ = ["collate", "epoch_batches", "length_sorted_batches", "row_lengths", "tokenize"]

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0}


def tokenize(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, max_length: int
) -> datasets.Dataset:
    """Tokenise a task dataset without padding (``collate`` pads each batch to its longest row).

    Sentence pairs are truncated longest-first to ``max_length`` tokens, special tokens included.

    Args:
        ds: A dataset from a task's reader, with ``task.text_columns`` and ``label``.
        tokenizer: The (student's) tokenizer.
        task: The task spec naming the text columns.
        max_length: Truncation length in tokens.

    Returns:
        An in-memory dataset with ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer
        makes them), ``labels`` and ``idx`` (the row's index in ``ds``).
    """
    phase = Phase(f"tokenising {len(ds)} rows", len(ds), "rows")  # the CLI turns datasets' own bar off

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        phase.update(len(indices))
        texts = [list(batch[column]) for column in task.text_columns]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        out = {key: encoded[key] for key in _MODEL_INPUTS if key in encoded}
        if "label" in batch:
            out["labels"] = list(batch["label"])
        out["idx"] = list(indices)
        return out

    # keep_in_memory: tokenised copies of hub datasets would otherwise pile up in the user's cache.
    out = ds.map(
        encode,
        batched=True,
        with_indices=True,
        remove_columns=ds.column_names,
        keep_in_memory=True,
        desc="Tokenizing",
    )
    phase.close()
    return out


def collate(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of tokenised rows on the right to the longest row.

    Args:
        rows: Rows from ``tokenize`` (lists or tensors).
        pad_token_id: The tokenizer's padding id, used for ``input_ids``.

    Returns:
        ``input_ids``, ``attention_mask`` (1 on real tokens, 0 on padding) and, when present,
        ``token_type_ids`` (0 on padding), each ``(B, L)`` long; ``labels`` ``(B,)`` long, or float32
        for regression; ``idx`` ``(B,)`` long.

    Raises:
        ValueError: ``rows`` is empty.
    """
    if not rows:
        raise ValueError("collate needs at least one row.")
    lengths = torch.tensor([len(row["input_ids"]) for row in rows])
    width = int(lengths.max())
    batch: dict[str, torch.Tensor] = {}
    for key in _MODEL_INPUTS:
        if key not in rows[0]:
            continue
        padded = torch.full((len(rows), width), _PAD_VALUES.get(key, pad_token_id), dtype=torch.long)
        for i, row in enumerate(rows):
            padded[i, : len(row[key])] = torch.as_tensor(row[key], dtype=torch.long)
        batch[key] = padded
    if "attention_mask" not in batch:
        batch["attention_mask"] = (torch.arange(width) < lengths[:, None]).long()
    if "labels" in rows[0]:
        labels = torch.stack([torch.as_tensor(row["labels"]) for row in rows])
        batch["labels"] = labels.float() if labels.is_floating_point() else labels.long()
    if "idx" in rows[0]:
        batch["idx"] = torch.as_tensor([int(row["idx"]) for row in rows], dtype=torch.long)
    return batch


def epoch_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    group_by_length: bool = False,
    drop_last: bool = False,
    min_last: int = 1,
) -> list[list[int]]:
    """Return the batches (lists of row indices) of one epoch, the same in every process for the same args.

    With ``group_by_length`` the rows are shuffled, cut into chunks of ``50 * batch_size``, sorted by
    length (longest first) within each chunk and cut into batches; then the order of the batches is
    shuffled. Rows in a batch have similar lengths, so dynamic padding wastes less, while which rows meet
    and the order of batches stay random from epoch to epoch.

    Args:
        lengths: Token count of each row (``len(input_ids)``).
        batch_size: Rows per batch.
        seed: Run seed (non-negative).
        epoch: Epoch number; each epoch gets its own order.
        shuffle: Randomise the order; ``False`` keeps rows in order (and sorted chunks with grouping).
        group_by_length: Batch rows of similar length together, as described above.
        drop_last: Drop the one batch smaller than ``batch_size``, if any.
        min_last: Drop that short batch if it has fewer rows than this (e.g. fewer than micro-batches).

    Returns:
        Each batch's row indices; without ``drop_last`` every index appears exactly once.

    Raises:
        ValueError: ``batch_size`` is below 1 or ``seed``/``epoch`` is negative.
    """
    if batch_size < 1 or seed < 0 or epoch < 0:
        raise ValueError(
            f"Need batch_size >= 1, seed >= 0 and epoch >= 0; got {batch_size}, {seed}, {epoch}."
        )
    # One generator per (seed, epoch): the order depends on nothing else, so every process and a resumed
    # run compute the same batches.
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    if group_by_length:
        sizes = np.asarray(lengths)
        chunk = 50 * batch_size
        pieces = [order[i : i + chunk] for i in range(0, len(order), chunk)]
        order = np.concatenate([p[np.argsort(-sizes[p], kind="stable")] for p in pieces]) if pieces else order
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < (batch_size if drop_last else min_last):
        batches.pop()
    if group_by_length and shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def row_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Token count of each row, read from Arrow offsets without turning the token column into Python lists.

    (A Python list of lists costs about 44 bytes per token: gigabytes per process for a large corpus.)
    """
    column = dataset.with_format("arrow")["input_ids"]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64)


def length_sorted_batches(dataset: datasets.Dataset, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of ``dataset`` in batches of similar length, shortest first: for inference, not training.

    Sorting by length keeps dynamic padding small; callers write each batch's outputs back by row index.
    """
    order = np.argsort(row_lengths(dataset), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
