"""Reading files that tasks share: CSV/TSV/JSON Lines/Parquet readers, column resolution, labels to ids.

The task kinds' own loaders (`distil.tasks.glue.reader`, `distil.tasks.custom.reader`) build on these and
return an in-memory ``datasets.Dataset`` with the task's text columns and a ``label`` column (int class
ids, or floats for regression). Bad files raise ``DataError`` naming the file, the field and the fix,
before training writes anything.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distil.data.spec import TaskSpec
from distil.errors import ConfigError, DataError
from distil.files import not_utf8

__all__ = [
    "CUSTOM_FIX",
    "TRUE",
    "column_values",
    "file_columns",
    "read_delimited",
    "read_user_file",
    "resolve_columns",
    "resolve_data_dir",
    "subset",
    "to_task_columns",
]

TRUE = {"1", "true", "yes", "on"}  # environment-variable values that mean yes
_Quoting = Literal[0, 1, 2, 3]  # csv.QUOTE_MINIMAL ... csv.QUOTE_NONE
CUSTOM_FIX = "Set data.text_columns and data.label_column to the file's column names."


def resolve_data_dir(explicit: str | Path | None = None) -> Path | None:
    """Find the folder that holds ``glue/<TASK>/*.tsv``.

    The order is: ``explicit`` (``--data-dir`` / ``data.data_dir``), then ``$DISTIL_DATA``, then
    ``../shared/data`` relative to the working directory when it exists, else ``None`` (use the hub).

    Args:
        explicit: A folder given by the user, or ``None``.

    Returns:
        The folder, or ``None`` when no candidate applies.

    Raises:
        DataError: ``explicit`` or ``$DISTIL_DATA`` names a folder that does not exist.
    """
    for value, source in (
        (explicit, "--data-dir / data.data_dir"),
        (os.environ.get("DISTIL_DATA"), "DISTIL_DATA"),
    ):
        if value is None or value == "":
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(
                f"Data folder {str(path)!r} (from {source}) does not exist; create it or fix {source}."
            )
        return path
    shared = (Path.cwd() / ".." / "shared" / "data").resolve()
    return shared if shared.is_dir() else None


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DataError(
            f"Data file {str(path)!r} does not exist; check the path (data.train_file/data.dev_file)."
        )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(
            f"Data file {str(path)!r} does not exist; check the path (data.train_file/data.dev_file)."
        )
    if path.stat().st_size == 0:
        raise DataError(f"Data file {str(path)!r} is empty; it needs a header line and at least one row.")
    bad = not_utf8(path)
    if bad is not None:
        raise DataError(f"{path}: not UTF-8 text at {bad}; re-save the file as UTF-8.")


def _first_row(path: Path, delimiter: str, quoting: _Quoting, encoding: str, headerless: bool) -> list[str]:
    with path.open(encoding=encoding, newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        first = next(rows, [])
        # Checked here because datasets reports a header-only file as an obscure "no data" error.
        has_data = headerless or next((row for row in rows if any(row)), None) is not None
    if not any(first):
        raise DataError(f"Data file {str(path)!r} is empty; it needs a header line and at least one row.")
    if not has_data:
        raise DataError(f"{path}: has a header but no rows; a data file needs at least one row.")
    return first


def _json_keys(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as handle:
        line = next((line for line in handle if line.strip()), "")
    if not line:
        raise DataError(f"Data file {str(path)!r} is empty; it needs at least one JSON object per line.")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: the first line is not JSON ({err}); write JSON Lines, one object per line."
        ) from None
    if not isinstance(record, dict):
        raise DataError(
            f"{path}: the first line is not a JSON object; write JSON Lines, one object per line."
        )
    return list(record)


def _check_columns(path: Path, found: list[str], needed: dict[str, str], fix: str) -> None:
    for column, role in needed.items():
        if column not in found:
            hint = f" {_HEADER_HINT}" if _looks_like_data(found) else ""
            raise DataError(f"{path}: no {role} {column!r}; the columns found are {found}. {fix}{hint}")


def _load(builder: str, path: Path, **kwargs: Any) -> datasets.Dataset:
    # A throwaway cache keeps user files out of ~/.cache (and free of stale entries after edits);
    # keep_in_memory makes the table outlive that folder.
    with tempfile.TemporaryDirectory(prefix="distil-data-") as cache:
        try:
            ds = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **kwargs
            )
        except Exception as err:  # pandas, pyarrow and datasets each raise their own parse errors
            reason = str(err.__cause__ or err).strip()
            hint = " (a cell that holds the delimiter must be quoted)" if "Expected" in reason else ""
            raise DataError(f"{path}: cannot be read as {builder.upper()}: {reason}{hint}") from err
    if len(ds) == 0:
        raise DataError(f"{path}: has a header but no rows; a data file needs at least one row.")
    return ds


def read_delimited(
    path: Path,
    needed: dict[str, str],
    fix: str,
    *,
    delimiter: str,
    quoting: _Quoting,
    encoding: str,
    column_names: tuple[str, ...] | None = None,
) -> datasets.Dataset:
    """A delimited file whose header (or ``column_names``) holds every ``needed`` column, all as text.

    Raises:
        DataError: The file is missing, empty, or lacks a column; the message ends with ``fix``.
    """
    _check_file(path)
    first = _first_row(path, delimiter, quoting, encoding, column_names is not None)
    if column_names is not None and len(first) != len(column_names):
        raise DataError(
            f"{path}: expected {len(column_names)} {delimiter!r}-separated columns without a header "
            f"({', '.join(column_names)}), found {len(first)}. {fix}"
        )
    columns = list(column_names or first)
    _check_columns(path, columns, needed, fix)
    # All columns are read (no usecols) so that a row with a stray delimiter is an error, not a silent shift.
    return _load(
        "csv",
        path,
        delimiter=delimiter,
        quoting=quoting,
        encoding=encoding,
        header=None if column_names else "infer",
        column_names=list(column_names) if column_names else None,
        # Text such as "null" or "NA" must stay text, and "007" must not become a number.
        keep_default_na=False,
        features=datasets.Features({c: datasets.Value("string") for c in columns}),
    )


def read_user_file(
    path: str | Path, needed: dict[str, str], fix: str, header: bool = True
) -> datasets.Dataset:
    """A user's .csv/.tsv/.jsonl/.json/.parquet file (by extension) that holds every ``needed`` column.

    Raises:
        DataError: The file is missing, empty, of an unknown type, or lacks a column.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        _check_exists(path)
        _check_columns(path, file_columns(path), needed, fix)
        if pq.read_metadata(path).num_rows == 0:  # the reader fails on it with an unrelated message
            raise DataError(f"{path}: has columns but no rows; a data file needs at least one row.")
        return _load("parquet", path)
    if suffix in (".jsonl", ".json"):
        _check_file(path)
        _check_columns(path, _json_keys(path), needed, fix)
        return _load("json", path)
    if suffix in (".csv", ".tsv"):
        # TSV cells are taken verbatim (no quoting) as in GLUE; CSV follows RFC 4180 quoting.
        tsv = suffix == ".tsv"
        delimiter = "\t" if tsv else ","
        quoting: _Quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
        names = None if header else tuple(file_columns(path, header=False))
        return read_delimited(
            path, needed, fix, delimiter=delimiter, encoding="utf-8-sig", quoting=quoting, column_names=names
        )
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl (JSON Lines) or .parquet."
    )


def file_columns(path: str | Path, header: bool = True) -> list[str]:
    """A user file's column names: CSV/TSV header, first JSON object's keys, or Parquet schema.

    Without a header line (``header=False``) CSV/TSV columns are numbered ``"0"``, ``"1"``, ...

    Raises:
        DataError: The file is missing, empty, not UTF-8 or not of a supported type.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        _check_exists(path)
        try:
            return list(pq.read_schema(path).names)
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"{path}: cannot be read as Parquet ({err}).") from err
    _check_file(path)
    if suffix in (".jsonl", ".json"):
        return _json_keys(path)
    if suffix in (".csv", ".tsv"):
        tsv = suffix == ".tsv"
        first = _first_row(
            path, "\t" if tsv else ",", csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, "utf-8-sig", not header
        )
        return [str(i) for i in range(len(first))] if not header else first
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl (JSON Lines) or .parquet."
    )


def resolve_columns(path: str | Path, header: bool, columns: list[str | int], field: str) -> list[str]:
    """The file's names for ``columns`` given by name or by position (0 = the first column).

    Raises:
        DataError: A position beyond the file's columns, or a name it lacks (with the header hint when the
            file's first line looks like data rather than names).
    """
    found = file_columns(path, header)
    out = []
    for column in columns:
        if isinstance(column, int):
            if not 0 <= column < len(found):
                raise DataError(
                    f"{path}: {field} position {column} is beyond the file's {len(found)} columns "
                    "(positions count from 0)."
                )
            out.append(found[column])
        elif column not in found:
            hint = _HEADER_HINT if header and _looks_like_data(found) else CUSTOM_FIX
            raise DataError(f"{path}: no {field} {column!r}; the columns found are {found}. {hint}")
        else:
            out.append(column)
    return out


_HEADER_HINT = (
    "Its first line looks like data, not column names: if the file has no header line, set "
    "data.header=false and name the columns by position (e.g. data.text_columns=[0] data.label_column=1)."
)


def _looks_like_data(names: list[str]) -> bool:
    """Column names that read like a data row: long, several words, or numbers."""

    def data_like(name: str) -> bool:
        return len(name) > 40 or len(name.split()) > 3 or name.replace(".", "", 1).lstrip("-").isdigit()

    return any(data_like(n) for n in names)


def column_values(ds: datasets.Dataset, column: str) -> list[Any]:
    """The values of one column, as a list."""
    # In datasets 5.x, list(ds[column]) formats row by row (seconds for SST-2); a slice converts at once.
    return list(ds[column][:])


def _label_ids(
    values: list[Any], task: TaskSpec, path: Path, column: str, fix: str
) -> list[int] | list[float]:
    if task.is_regression:
        scores: list[float] = []
        for row, value in enumerate(values, 1):
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise DataError(
                    f"{path}: data row {row}: label {value!r} in column {column!r} is not a finite number; "
                    "a regression task (data.is_regression) needs real-valued labels."
                )
            scores.append(score)
        return scores
    lookup = {raw: i for i, raw in enumerate(task.raw_labels or ())}
    ids: list[int] = []
    for row, value in enumerate(values, 1):
        label_id = lookup.get(value.strip() if isinstance(value, str) else str(value))
        if label_id is None:
            raise DataError(
                f"{path}: data row {row}: label {value!r} in column {column!r} is not one of the allowed "
                f"labels {list(lookup)}. {fix}"
            )
        ids.append(label_id)
    return ids


def to_task_columns(
    ds: datasets.Dataset,
    task: TaskSpec,
    path: Path,
    source_text: tuple[str, ...],
    source_label: str,
    fix: str,
) -> datasets.Dataset:
    """The task's text columns (renamed from the file's) and a ``label`` column of ids or floats.

    Raises:
        DataError: A label is not one of the task's, a regression label is not a finite number, or a text
            cell is missing.
    """
    labels = _label_ids(column_values(ds, source_label), task, path, source_label, fix)
    out = ds.select_columns(list(source_text))
    for column in source_text:
        values = column_values(out, column)
        if None in values:
            raise DataError(
                f"{path}: data row {values.index(None) + 1} has no value in text column {column!r} "
                '(a short row or a JSON null); write "" for empty text.'
            )
        if out.features[column] not in (datasets.Value("string"), datasets.Value("large_string")):
            out = out.cast_column(column, datasets.Value("string"))
    renames = {s: t for s, t in zip(source_text, task.text_columns, strict=True) if s != t}
    out = out.rename_columns(renames) if renames else out
    return out.add_column("label", labels)


def subset(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """Take a seeded random subset of ``n`` rows, kept in their original order.

    The same ``(len(ds), n, seed)`` always selects the same rows, on any machine.

    Args:
        ds: The dataset.
        n: Rows to keep; ``None`` (or ``n >= len(ds)``) keeps all.
        seed: Seed of the selection.

    Returns:
        The subset (``ds`` itself when nothing is dropped).

    Raises:
        ConfigError: ``n`` is below 1.
    """
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ConfigError(
            f"A data subset needs at least 1 row; got {n} (data.train_subset / data.dev_subset)."
        )
    rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.select(rows.tolist())
