"""SQuAD v1.1 / v2.0 files: reading and validating the official JSON, and article-level splits.

The official format is ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``. `read_squad` flattens it to
one row per question: ``id``, ``title``, ``context``, ``question``, ``answer_texts`` and ``answer_starts``
(character offsets into ``context``; both empty for an unanswerable SQuAD 2.0 question). Every problem
raises a ``DataError`` naming the file, the question or field, and the fix, before any model is loaded.
Tokenisation into model features lives in `distil.tasks.squad.features`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from distil.errors import DataError
from distil.files import not_utf8

__all__ = ["check_answer_spans", "read_squad", "resolve_squad_file", "split_by_title"]

_DEFAULTS = {
    ("squad", "train"): "squad/v1.1/train-v1.1.json",
    ("squad", "dev"): "squad/v1.1/dev-v1.1.json",
    ("squad_v2", "train"): "squad/v2.0/train-v2.0.json",
    ("squad_v2", "dev"): "squad/v2.0/dev-v2.0.json",
}


def resolve_squad_file(task: str, split: str, value: str | None, data_dir: Path | None) -> Path:
    """Find a SQuAD file: ``value`` as given, else under ``data_dir``; unset: the official file name there.

    Args:
        task: ``squad`` or ``squad_v2``.
        split: ``train`` or ``dev`` (names the config field in errors).
        value: ``data.train_file`` / ``data.dev_file``, or ``None``.
        data_dir: The data folder (``data.data_dir``, ``$DISTIL_DATA`` or ``../shared/data``), or ``None``.

    Returns:
        An existing file.

    Raises:
        DataError: No such file.
    """
    field = f"data.{split}_file"
    relative = value or _DEFAULTS[(task, split)]
    candidates = [Path(relative).expanduser()] if value else []
    if data_dir is not None and not Path(relative).is_absolute():
        candidates.append(data_dir / relative)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(repr(str(p)) for p in candidates) or repr(relative)
    fix = f"set {field} to the SQuAD JSON file" + (
        " (or data.split_dev to train on part of data.dev_file's articles)" if split == "train" else ""
    )
    raise DataError(f"SQuAD {split} file not found (tried {tried}); {fix}.")


def _need(node: Any, key: str, kind: type, where: str, path: Path) -> Any:
    value = node.get(key) if isinstance(node, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            f"{path}: {where} needs a {kind.__name__} field {key!r}; the file must follow the official "
            "SQuAD JSON format (data -> paragraphs -> qas -> answers)."
        )
    return value


def _load_json(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"SQuAD file {str(path)!r} does not exist; check data.train_file / data.dev_file.")
    bad = not_utf8(path)
    if bad is not None:
        raise DataError(f"{path}: not UTF-8 text at {bad}; give an official SQuAD JSON file.")
    try:
        with path.open(encoding="utf-8") as handle:
            top = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 JSON file ({err}); give an official SQuAD JSON file.") from None
    return _need(top, "data", list, "the top level", path)


def _answers(qa: dict[str, Any], qid: str, version_2: bool, path: Path) -> tuple[list[str], list[int]]:
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise DataError(f"{path}: question {qid!r}: 'answers' must be a list.")
    texts = [_need(a, "text", str, f"an answer of question {qid!r}", path) for a in answers]
    starts = [_need(a, "answer_start", int, f"an answer of question {qid!r}", path) for a in answers]
    impossible = bool(qa.get("is_impossible", False))
    if impossible and not version_2:
        raise DataError(
            f"{path}: question {qid!r} is unanswerable (is_impossible); SQuAD v1.1 has none. Use "
            "data.task=squad_v2 for SQuAD 2.0 files."
        )
    if impossible and texts:
        raise DataError(f"{path}: question {qid!r} is marked is_impossible but has answers; fix the file.")
    if not impossible and not texts:
        raise DataError(
            f"{path}: question {qid!r} has no answers and is not marked is_impossible. A file without "
            "answers (e.g. a hidden test set) cannot be trained or scored on; use a file with answers."
        )
    return texts, starts


def read_squad(path: str | Path, *, version_2: bool) -> datasets.Dataset:
    """Read and validate an official SQuAD JSON file, one row per question.

    Args:
        path: The JSON file.
        version_2: Accept unanswerable questions (``is_impossible: true`` with ``answers: []``).

    Returns:
        An in-memory dataset with ``id``, ``title``, ``context``, ``question``, ``answer_texts`` and
        ``answer_starts``, in file order.

    Raises:
        DataError: The file is missing, not JSON, not in the SQuAD format, has duplicate ids or no
            questions, has a question with no answer that is not unanswerable (always an error: such a
            file can be neither trained nor scored on), or an unanswerable question under SQuAD v1.1.
    """
    path = Path(path)
    rows: dict[str, list[Any]] = {k: [] for k in ("id", "title", "context", "question")}
    rows |= {"answer_texts": [], "answer_starts": []}
    seen: set[str] = set()
    for a, article in enumerate(_load_json(path)):
        title = str(article.get("title", f"article-{a}")) if isinstance(article, dict) else ""
        for paragraph in _need(article, "paragraphs", list, f"article {a}", path):
            context = _need(paragraph, "context", str, f"a paragraph of article {title!r}", path)
            for qa in _need(paragraph, "qas", list, f"a paragraph of article {title!r}", path):
                qid = str(_need(qa, "id", str, f"a question of article {title!r}", path))
                question = _need(qa, "question", str, f"question {qid!r}", path)
                if qid in seen:
                    raise DataError(f"{path}: question id {qid!r} appears twice; ids must be unique.")
                seen.add(qid)
                texts, starts = _answers(qa, qid, version_2, path)
                for key, value in zip(rows, (qid, title, context, question, texts, starts), strict=True):
                    rows[key].append(value)
    if not seen:
        raise DataError(f"{path}: no questions found; give a SQuAD file with data -> paragraphs -> qas.")
    features = datasets.Features(
        {k: datasets.Value("string") for k in ("id", "title", "context", "question")}
        | {"answer_texts": datasets.List(datasets.Value("string"))}
        | {"answer_starts": datasets.List(datasets.Value("int64"))}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def check_answer_spans(ds: datasets.Dataset, path: str | Path) -> None:
    """Require every answer of a training split to sit at its ``answer_start`` in the context.

    Training labels come from the character offsets, so a wrong offset would teach a wrong span.

    Raises:
        DataError: Some answers do not match their context; the message names up to three questions.
    """
    bad = [
        qid
        for qid, context, texts, starts in zip(
            ds["id"], ds["context"], ds["answer_texts"], ds["answer_starts"], strict=True
        )
        if any(context[s : s + len(t)] != t for t, s in zip(texts, starts, strict=True))
    ]
    if bad:
        raise DataError(
            f"{path}: {len(bad)} training question(s) have an answer whose text is not at its answer_start "
            f"in the context (first: {bad[:3]}); fix the offsets or drop those questions."
        )


def split_by_title(
    ds: datasets.Dataset, held_out: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, dict[str, Any]]:
    """Split questions by article title, so that no article is on both sides.

    Args:
        ds: Rows from `read_squad`.
        held_out: Fraction of the articles (rounded, at least one, at most all but one) held out; a value
            >= 1 holds out whole articles until at least that many questions are held out.
        seed: Seed of the article permutation; the same file and seed always give the same split.

    Returns:
        ``(train, held_out, summary)``; the summary counts articles and questions on each side.

    Raises:
        DataError: The file has fewer than two articles.
    """
    titles = list(dict.fromkeys(ds["title"]))
    if len(titles) < 2:
        raise DataError("data.split_dev needs a SQuAD file with at least two articles (titles).")
    order = np.random.default_rng(seed).permutation(len(titles))
    if held_out < 1:
        count = min(max(1, round(held_out * len(titles))), len(titles) - 1)
    else:  # whole articles, in the seeded order, until enough questions
        per_title = Counter(ds["title"])
        count, questions = 0, 0
        while questions < held_out and count < len(titles) - 1:
            questions += per_title[titles[order[count]]]
            count += 1
    held = {titles[i] for i in order[:count]}
    is_held = [t in held for t in ds["title"]]
    train = ds.select([i for i, h in enumerate(is_held) if not h])
    dev = ds.select([i for i, h in enumerate(is_held) if h])
    summary = {
        "split": "dev file split by article title",
        "train_articles": len(titles) - count,
        "held_out_articles": count,
        "held_out_titles": sorted(held),
    }
    return train, dev, summary
