"""Unlabelled text corpora -> fixed-length token blocks for task-agnostic distillation.

Files are read as WikiExtractor ``<doc>`` dumps or as plain text (``iter_documents``). Their documents are
tokenised in batches and packed back to back into blocks of exactly ``block_size`` tokens, as in RoBERTa's
FULL-SENTENCES packing: a block may span document boundaries, and the final incomplete block is dropped.

Special tokens (``add_special_tokens=True``): every block is wrapped in the tokenizer's own single-sequence
template, found by encoding a probe text with and without special tokens. That gives ``[CLS] … [SEP]``
for BERT-like encoders, ``<s> … </s>`` for RoBERTa/XLM-R, ``<s> …`` for Llama and nothing for GPT-2, so
blocks look like the text the model sees at fine-tuning and evaluation time. Consecutive documents are
separated by one ``sep_token`` (RoBERTa's extra separator), else ``eos_token`` (GPT-2's
``<|endoftext|>``), else nothing. With ``add_special_tokens=False`` blocks hold text tokens only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch

from distil.data.batching import collate
from distil.errors import ConfigError, DataError
from distil.files import not_utf8

if TYPE_CHECKING:  # only for annotations; keeps `import distil.data` from loading transformers
    from transformers import PreTrainedTokenizerBase

__all__ = ["build_blocks", "collate_blocks", "corpus_files", "iter_documents"]

_CACHE_VERSION = 1  # bump when parsing or packing changes, so that caches of the old format are not reused
_DOC_OPEN = re.compile(r"<doc(\s[^>]*)?>")
_SKIPPED_NAMES = re.compile(r"(licen[cs]e|copying)(\..*)?", re.IGNORECASE)
_BATCH_CHARS = 1 << 20  # up to ~1 MB of text per tokenizer call: fast batching, bounded memory
_MIN_BLOCK = 8


def corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand corpus paths into the list of text files to read.

    Files are taken as given. Folders are searched recursively and their files sorted by path; hidden files
    and folders, Markdown files (``*.md``, e.g. ``PROVENANCE.md``) and LICENSE/LICENCE/COPYING files are
    skipped. A file named twice is read once.

    Args:
        paths: Files and folders, in reading order (a single ``str`` or ``Path`` is accepted too).

    Returns:
        The files, in reading order.

    Raises:
        DataError: A path does not exist, or no file is found.
    """
    if isinstance(paths, str | Path):  # a str is a Sequence too, of characters
        paths = [paths]
    found: dict[Path, Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.setdefault(path.resolve(), path)
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                parts = file.relative_to(path).parts
                skip = any(p.startswith(".") for p in parts) or file.suffix.lower() == ".md"
                if file.is_file() and not skip and not _SKIPPED_NAMES.fullmatch(file.name):
                    found.setdefault(file.resolve(), file)
        else:
            raise DataError(f"Corpus path {str(path)!r} does not exist; give existing text files or folders.")
    if not found:
        raise DataError(
            f"No text files found in {[str(p) for p in paths]} (hidden, *.md and LICENSE files are "
            "skipped); put the corpus text files there."
        )
    return list(found.values())


def iter_documents(path: str | Path) -> Iterator[str]:
    """Yield the documents of one corpus file, read line by line (files larger than memory are fine).

    A file whose first non-blank line is a ``<doc ...>`` tag is read as WikiExtractor output: one document
    per ``<doc>``, without the ``<doc>``/``</doc>`` lines and the title line right after ``<doc>``; any text
    outside the tags becomes a document of its own. Any other file is plain text, where each run of
    non-blank lines (a paragraph) is one document; WikiText files are plain text in this sense, so each
    ``= Heading =`` line and each paragraph is a document. No other text is dropped: lines keep their
    content (trailing whitespace removed) and are joined with newlines; only blank lines disappear.

    Args:
        path: A UTF-8 text file.

    Yields:
        Each document's text (never empty).

    Raises:
        DataError: The file is not UTF-8 text.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            first = next((line.strip() for line in handle if line.strip()), "")
        with path.open(encoding="utf-8") as handle:
            yield from _split(handle, wiki=_DOC_OPEN.fullmatch(first) is not None)
    except UnicodeDecodeError:
        raise DataError(
            f"Corpus file {path}: not UTF-8 text at {not_utf8(path)}; convert it to UTF-8."
        ) from None


def _split(lines: Iterable[str], wiki: bool) -> Iterator[str]:
    kept: list[str] = []
    after_tag = False
    for line in lines:
        stripped = line.strip()
        opening = wiki and _DOC_OPEN.fullmatch(stripped) is not None
        # Documents end at <doc>/</doc> tags (WikiExtractor) or at blank lines (plain text).
        if opening or (wiki and stripped == "</doc>") or not (wiki or stripped):
            if kept:
                yield "\n".join(kept)
            kept = []
        elif stripped and not after_tag:  # after_tag: the line after <doc ...> is the article's title
            kept.append(line.rstrip())
        after_tag = opening
    if kept:
        yield "\n".join(kept)


def _template(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    # The ids the tokenizer puts around one sequence: what tokenizer(text) adds before and after the text.
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    return ([cls], [sep]) if cls is not None and sep is not None else ([], [])


def _tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    # The full serialised fast tokenizer covers vocab, normaliser (lower-casing) and post-processor.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_key(files: list[Path], tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> str:
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    tokenizer_id = [tokenizer.name_or_path, len(tokenizer), _tokenizer_digest(tokenizer)]
    payload = {"version": _CACHE_VERSION, "files": stats, "tokenizer": tokenizer_id, **settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def _token_stream(files: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> Iterator[list[int]]:
    batch: list[str] = []
    size, budget = 0, _BATCH_CHARS >> 4  # small first batches: a max_blocks budget may need little text
    docs = (doc for file in files for doc in iter_documents(file))
    for doc in itertools.chain(docs, [None]):
        if doc is not None:
            batch.append(doc)
            size += len(doc)
        if batch and (doc is None or size >= budget):
            # verbose=False: documents are longer than model_max_length by design; blocks cut them later.
            encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
            yield from encoded["input_ids"]
            batch, size, budget = [], 0, min(2 * budget, _BATCH_CHARS)


def _generate_blocks(
    files: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    wrap: tuple[list[int], list[int], list[int]],
    max_blocks: int | None,
) -> Iterator[dict[str, Any]]:
    prefix, suffix, separator = wrap
    body = block_size - len(prefix) - len(suffix)
    buffer: list[int] = []
    start = tokens = idx = 0
    mask = [1] * block_size
    for ids in _token_stream(files, tokenizer):
        if not ids:
            continue
        if tokens and separator:
            buffer.extend(separator)
        buffer.extend(ids)
        tokens += len(ids)
        while len(buffer) - start >= body:
            yield {
                "input_ids": prefix + buffer[start : start + body] + suffix,
                "attention_mask": mask,
                "idx": idx,
            }
            start += body
            idx += 1
            if idx == max_blocks:
                return
        del buffer[:start]  # O(block) per document instead of re-slicing a growing list
        start = 0
    if idx == 0:
        found = f"only {tokens} text tokens" if tokens else "no text"
        where = files[0] if len(files) == 1 else f"{len(files)} files from {files[0]}"
        raise DataError(
            f"The corpus ({where}) has {found}: less than one block of {block_size} tokens "
            f"({body} text tokens); add text or lower data.max_length."
        )


def build_blocks(
    paths: Sequence[str | Path],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    *,
    cache_dir: str | Path | None = None,
    max_blocks: int | None = None,
    add_special_tokens: bool = True,
) -> datasets.Dataset:
    """Tokenise a corpus and pack it into blocks of exactly ``block_size`` tokens (see the module docstring).

    Blocks are written by ``datasets.Dataset.from_generator`` to an Arrow file, one block at a time. With
    ``cache_dir`` the file stays there and is memory-mapped, so corpora larger than memory work, and a call
    with the same inputs reuses it at once. The cache key covers each file's resolved path, size and
    modification time, the tokenizer (name, length and a hash of its full serialisation), ``block_size``,
    the special-token ids used (so ``add_special_tokens``) and ``max_blocks``; any change builds a new
    entry next to the old ones (delete stale ones by hand). Concurrent builders (DDP ranks) wait on
    datasets' file lock and then reuse the finished entry. Without ``cache_dir`` the blocks are built in a
    temporary folder and loaded into memory before it is removed; pass ``cache_dir`` for large corpora.

    Args:
        paths: Corpus files and folders (see ``corpus_files``).
        tokenizer: A fast tokenizer (documents are encoded in batches).
        block_size: Tokens per block, special tokens included (``data.max_length``).
        cache_dir: Folder for cached blocks, or ``None``.
        max_blocks: Stop after this many blocks (a fixed budget); ``None`` reads the whole corpus.
        add_special_tokens: Wrap blocks in the tokenizer's template and separate documents (module docstring).

    Returns:
        A dataset with ``input_ids`` (int32, length ``block_size``), ``attention_mask`` (all 1, int8) and
        ``idx`` (the row number).

    Raises:
        ConfigError: ``block_size`` is below 8 or above the tokenizer's finite ``model_max_length``, or
            ``max_blocks`` is below 1.
        DataError: A path is missing, a file is not UTF-8, or the corpus holds less than one block of text.
    """
    limit = tokenizer.model_max_length
    if block_size < _MIN_BLOCK or (limit and limit < 1e6 and block_size > limit):
        cap = f" and <= {limit}, the tokenizer's model_max_length" if limit and limit < 1e6 else ""
        raise ConfigError(
            f"data.max_length (the corpus block size) must be >= {_MIN_BLOCK}{cap}; got {block_size}."
        )
    if max_blocks is not None and max_blocks < 1:
        raise ConfigError(f"max_blocks must be >= 1 (or None for the whole corpus); got {max_blocks}.")
    files = corpus_files(paths)
    prefix, suffix = _template(tokenizer) if add_special_tokens else ([], [])
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    separator = [sep] if add_special_tokens and sep is not None else []
    settings = {"block_size": block_size, "wrap": (prefix, suffix, separator), "max_blocks": max_blocks}
    # files as a tuple: datasets would take a list argument for shards and call the generator per file.
    gen_kwargs = {"files": tuple(str(f) for f in files), "tokenizer": tokenizer, **settings}
    row = {"input_ids": datasets.Value("int32"), "attention_mask": datasets.Value("int8")}
    features = datasets.Features({k: datasets.List(v, block_size) for k, v in row.items()})
    features["idx"] = datasets.Value("int64")
    temporary = cache_dir is None
    folder = tempfile.TemporaryDirectory(prefix="distil-corpus-") if temporary else nullcontext(cache_dir)
    with folder as where:
        try:
            # fingerprint names the cache entry; it also spares datasets from hashing the tokenizer.
            return datasets.Dataset.from_generator(
                _generate_blocks,
                features=features,
                cache_dir=str(Path(str(where)).expanduser()),
                keep_in_memory=temporary,  # the table must outlive the temporary folder
                gen_kwargs=gen_kwargs,
                fingerprint=_cache_key(files, tokenizer, settings),
            )
        except datasets.exceptions.DatasetGenerationError as err:
            if isinstance(err.__cause__, DataError):  # our own message, not datasets' generic wrapper
                raise err.__cause__ from None
            raise


def collate_blocks(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack corpus blocks (or ragged tokenised text, right-padded to the longest row) into a batch.

    Args:
        rows: Rows with ``input_ids`` and optionally ``attention_mask``/``idx`` (lists or tensors).
        pad_token_id: The tokenizer's padding id, used for ``input_ids`` of shorter rows.

    Returns:
        ``input_ids`` and ``attention_mask`` (0 on padding), each ``(B, L)`` long, and ``idx`` ``(B,)`` long
        when the rows have it.

    Raises:
        ValueError: ``rows`` is empty.
    """
    return collate(rows, pad_token_id)
