"""A larger transfer set for task distillation: perturbed copies of the training sentences.

A small student learns more from KD when the teacher labels many more inputs than the task has (Tang et
al. 2019; TinyBERT's data augmentation). Each copy of a sentence has words masked, words replaced by a
neighbour in the teacher's input-embedding space (standing in for GloVe or a masked LM, which an
encoder-only checkpoint may lack), and sometimes only an n-gram kept. A copy keeps the original's label,
which may no longer fit it: distil on the file with ``method.alpha=1`` so only the teacher's soft labels
count.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from distil.data.spec import TaskSpec
from distil.errors import ConfigError, DataError
from distil.files import atomic_write_text

__all__ = [
    "AugmentOptions",
    "augment_rows",
    "augment_text",
    "check_output",
    "embedding_neighbours",
    "write_task_file",
]


@dataclass(frozen=True)
class AugmentOptions:
    """How each copy is perturbed (defaults: Tang et al. 2019's SST-2 settings, 20 copies there).

    Attributes:
        copies: Perturbed copies drawn per example (duplicates and unchanged copies are dropped).
        p_mask: Chance that a word becomes the tokenizer's mask (or unknown) token.
        p_replace: Chance that a word with embedding neighbours becomes one of them.
        p_ngram: Chance that the copy is cut to a random n-gram of 1..``max_ngram`` words.
        max_ngram: Longest n-gram kept.
        neighbours: Nearest vocabulary words a word may be replaced by.
        seed: Seed of every random draw.
    """

    copies: int = 4
    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    neighbours: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ConfigError(f"copies must be >= 1, got {self.copies}.")
        for name in ("p_mask", "p_replace", "p_ngram"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}.")
        if self.p_mask + self.p_replace > 1.0:
            raise ConfigError(f"p_mask + p_replace must be <= 1, got {self.p_mask + self.p_replace}.")
        if self.max_ngram < 1 or self.neighbours < 1:
            raise ConfigError("max_ngram and neighbours must be >= 1.")


def _single_token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def embedding_neighbours(
    embeddings: torch.Tensor, tokenizer: PreTrainedTokenizerBase, words: Iterable[str], k: int
) -> dict[str, list[str]]:
    """The ``k`` nearest whole words (cosine, input embeddings) of each word that is a single token.

    Only alphabetic vocabulary entries that tokenize back to themselves are candidates, so WordPiece
    continuations (``##s``), BPE pieces and special tokens never enter a sentence. A query may be any
    single-token word, punctuation included (as with TinyBERT's masked-LM candidates, a comma may become
    a word).

    Args:
        embeddings: The model's input embedding matrix, ``[vocab, hidden]``.
        tokenizer: Its tokenizer.
        words: The words to find neighbours for (others are left out of the result).
        k: Neighbours per word.
    """
    word_ids = {w: i for w in set(words) if (i := _single_token_id(tokenizer, w)) is not None}
    candidates: list[int] = []
    names: list[str] = []
    for token_id in range(min(len(tokenizer), embeddings.shape[0])):
        text = str(tokenizer.decode([token_id])).strip()
        if text.isalpha() and _single_token_id(tokenizer, text) == token_id:
            candidates.append(token_id)
            names.append(text)
    if not word_ids or len(candidates) < 2:
        return {}
    pool = torch.nn.functional.normalize(embeddings[candidates].float(), dim=-1)
    queries = torch.nn.functional.normalize(embeddings[list(word_ids.values())].float(), dim=-1)
    scores = queries @ pool.T
    # A word is its own nearest neighbour; drop it by id rather than assume it ranks first.
    position = {c: j for j, c in enumerate(candidates)}
    for row, token_id in enumerate(word_ids.values()):
        if token_id in position:
            scores[row, position[token_id]] = -2.0
    top = scores.topk(min(k, len(candidates) - 1), dim=-1).indices
    return {w: [names[j] for j in row] for w, row in zip(word_ids, top.tolist(), strict=True)}


def augment_text(
    text: str, rng: random.Random, neighbours: dict[str, list[str]], mask_token: str, opts: AugmentOptions
) -> str:
    """One perturbed copy of ``text`` (whitespace-separated words)."""
    out: list[str] = []
    for word in text.split():
        draw = rng.random()
        if draw < opts.p_mask:
            out.append(mask_token)
        elif draw < opts.p_mask + opts.p_replace and word.lower() in neighbours:
            out.append(rng.choice(neighbours[word.lower()]))
        else:
            out.append(word)
    if out and rng.random() < opts.p_ngram:
        n = rng.randint(1, min(opts.max_ngram, len(out)))
        start = rng.randint(0, len(out) - n)
        out = out[start : start + n]
    return " ".join(out)


def augment_rows(
    ds: Dataset, spec: TaskSpec, neighbours: dict[str, list[str]], mask_token: str, opts: AugmentOptions
) -> list[tuple[list[str], float]]:
    """The originals followed by their distinct perturbed copies, as ``(texts, label)`` pairs."""
    rng = random.Random(opts.seed)
    columns = [list(ds[c][:]) for c in spec.text_columns]
    labels = list(ds["label"][:])
    rows: list[tuple[list[str], float]] = []
    seen: set[tuple[str, ...]] = set()
    for i, label in enumerate(labels):
        texts = [col[i] for col in columns]
        seen.add(tuple(texts))
        rows.append((texts, label))
    for i, label in enumerate(labels):
        for _ in range(opts.copies):
            texts = [augment_text(col[i], rng, neighbours, mask_token, opts) for col in columns]
            if all(texts) and tuple(texts) not in seen:
                seen.add(tuple(texts))
                rows.append((texts, label))
    return rows


def _clean(text: str) -> str:
    # The file is TSV read verbatim; a tab or newline inside a sentence would shift its columns.
    return " ".join(text.split())


def check_output(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a ``Path`` if an augmented file may be written there (checked before any work).

    Raises:
        DataError: It is not a ``.tsv`` name, or it exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.suffix != ".tsv":
        raise DataError(f"{path}: the augmented file is written as TSV; give it a .tsv name.")
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; pass --overwrite to replace it, or choose another path.")
    return path


def write_task_file(
    path: str | Path, spec: TaskSpec, rows: Sequence[tuple[list[str], float]], *, overwrite: bool = False
) -> Path:
    """Write rows as a TSV that ``data.train_file`` reads for ``spec`` (its text columns and ``label``).

    Labels are written as the task's raw labels (GLUE's file values, or the custom file's), so the file
    loads like the task's own. The file appears whole or not at all (written beside, then renamed).

    Raises:
        DataError: ``path`` exists and ``overwrite`` is false, or is not a ``.tsv`` file.
    """
    path = check_output(path, overwrite)
    raw = spec.raw_labels
    lines = ["\t".join([*spec.text_columns, "label"])]
    for texts, label in rows:
        value = repr(float(label)) if spec.is_regression or raw is None else raw[int(label)]
        lines.append("\t".join([*(_clean(t) for t in texts), value]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
