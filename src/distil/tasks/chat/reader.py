"""Read conversations: JSON Lines / JSON / Parquet files, ``save_to_disk`` folders, or Hub datasets by id.

Every row becomes a list of ``{"role", "content"}`` messages. A row holds either ``messages`` (the
conversation) or ``prompt`` and ``completion`` (TRL's prompt-completion format): each a string (a user
turn, an assistant turn) or a list of messages. Bad rows raise ``DataError`` naming the source, the row
and the fix, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from distil.errors import DataError
from distil.files import not_utf8

__all__ = ["ROLES", "Message", "conversations", "read_rows"]

ROLES = ("system", "user", "assistant", "tool")
Message = dict[str, str]
_FORMAT = (
    "each row needs 'messages' (a list of {role, content}) or 'prompt' and 'completion' (strings or lists "
    "of messages)"
)


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several unrelated types for a broken file
            raise DataError(f"{path}: not a readable Parquet file ({err}).") from None
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: conversations are read from .jsonl, .json or .parquet files (or a folder).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (at {not_utf8(path)}); save it as UTF-8.") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err}).") from None
        return [r for r in rows]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}, line {n}: not a JSON object ({err.msg}); one conversation per line."
            ) from None
    return rows


def read_rows(source: str, split: str, field: str) -> list[dict[str, Any]]:
    """The raw rows of ``source``: a file, a ``save_to_disk`` folder, or a Hub dataset id (``split``).

    Raises:
        DataError: Nothing readable is at ``source``; the message names ``field``.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise DataError(
                f"{field} {source!r}: not a folder written by datasets' save_to_disk ({err})."
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(
                    f"{field} {source!r} has splits {sorted(loaded)}, not {split!r}; set the split."
                )
            loaded = loaded[split]
        return [dict(r) for r in loaded]
    if path.suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~")):
        raise DataError(f"{field} {source!r} does not exist; check the path.")
    try:  # a Hub dataset id: needs the network (or the datasets cache)
        loaded = datasets.load_dataset(source, split=split)
    except Exception as err:  # hub errors come in many types; the message says what happened
        raise DataError(
            f"{field} {source!r} is not a file or folder here, and loading it as a Hugging Face dataset "
            f"failed ({type(err).__name__}: {str(err)[:200]}); offline, save it with save_to_disk and give "
            "the folder."
        ) from None
    return [dict(r) for r in loaded]


def _as_messages(value: Any, role: str, where: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return _checked(value, where)
    raise DataError(
        f"{where}: {role} text must be a string or a list of messages, got {type(value).__name__}."
    )


def _checked(messages: list[Any], where: str) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise DataError(f"{where}: every message needs a string 'role' and a string 'content'.")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: role {m['role']!r} is not one of {', '.join(ROLES)}.")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def conversations(rows: list[dict[str, Any]], source: str) -> list[list[Message]]:
    """Each row as a conversation that ends with an assistant turn.

    Raises:
        DataError: A row has neither format, a message is malformed, or no assistant turn has text.
    """
    out: list[list[Message]] = []
    for n, row in enumerate(rows, 1):
        where = f"{source}, row {n}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: {_FORMAT}.")
        if row.get("messages") is not None:
            messages = row["messages"]
            if not isinstance(messages, list):
                raise DataError(f"{where}: 'messages' must be a list of {{role, content}}.")
            conv = _checked(messages, where)
        elif row.get("prompt") is not None and row.get("completion") is not None:
            conv = _as_messages(row["prompt"], "user", where) + _as_messages(
                row["completion"], "assistant", where
            )
        else:
            raise DataError(f"{where}: {_FORMAT}; it has {sorted(row)}.")
        if not any(m["role"] == "assistant" and m["content"] for m in conv):
            raise DataError(f"{where}: no assistant message with text; there is nothing to learn from it.")
        if conv[0]["role"] == "assistant":
            raise DataError(f"{where}: the conversation starts with the assistant; it needs a prompt first.")
        out.append(conv)
    if not out:
        raise DataError(f"{source}: no conversations.")
    return out
