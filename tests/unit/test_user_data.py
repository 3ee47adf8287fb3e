"""Users' own files: headerless and headered CSV/TSV/JSONL/Parquet, a carved dev split, shared texts."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distil.data.splits import held_out_count, overlap, split_rows
from distil.errors import ConfigError, DataError
from distil.schema import from_dict
from distil.tasks import load_task
from distil.tasks.custom import CustomData

ROWS = [
    ("wall street rallies as tech stocks climb", "Business"),
    ("the team won the final in extra time", "Sports"),
    ("a new chip doubles battery life", "Sci/Tech"),
    ("leaders meet to discuss the treaty", "World"),
    ("bank profits fall, shares slip", "Business"),
    ("striker signs a five year deal", "Sports"),
    ("researchers map the human genome", "Sci/Tech"),
    ("elections held amid protests", "World"),
] * 3


def _write(folder: Path, fmt: str, header: bool) -> Path:
    path = folder / f"topics-{'h' if header else 'n'}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "topic": y}) + "\n" for t, y in ROWS))
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": [t for t, _ in ROWS], "topic": [y for _, y in ROWS]}), path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",", quoting=csv.QUOTE_MINIMAL)
            if header:
                writer.writerow(["text", "topic"])
            writer.writerows(ROWS)
    return path


def _task(path: Path, **fields):
    values = {"task": "custom", "train_file": str(path), "text_columns": ["text"], "label_column": "topic"}
    return load_task(from_dict(CustomData, values | fields, "data"), 0)


@pytest.mark.parametrize(
    ("fmt", "header"),
    [("tsv", True), ("tsv", False), ("csv", True), ("csv", False), ("jsonl", True), ("parquet", True)],
)
def test_every_format_with_or_without_a_header_gives_the_same_examples(tmp_path, fmt, header):
    path = _write(tmp_path, fmt, header)
    fields = {} if header else {"header": False, "text_columns": [0], "label_column": 1}
    task = _task(path, **fields)
    reference = _task(_write(tmp_path, "tsv", True))
    text = task.spec.text_columns[0]
    assert task.raw_train[text][:] == reference.raw_train["text"][:] == [t for t, _ in ROWS]
    assert task.raw_train["label"][:] == reference.raw_train["label"][:]
    assert task.spec.label_names == ("Business", "Sci/Tech", "Sports", "World")


def test_positions_also_name_columns_of_files_with_a_header(tmp_path):
    task = _task(_write(tmp_path, "parquet", True), text_columns=[0], label_column=1)
    assert task.spec.text_columns == ("text",) and task.spec.label_column == "topic"


def test_a_headerless_file_read_with_a_header_suggests_the_option(tmp_path):
    with pytest.raises(DataError, match=r"looks like data.*data\.header=false.*text_columns=\[0\]"):
        _task(_write(tmp_path, "tsv", False))
    with pytest.raises(ConfigError, match="by position"):
        from_dict(
            CustomData,
            {"task": "custom", "train_file": "x.tsv", "text_columns": ["text"], "header": False},
            "data",
        )
    with pytest.raises(DataError, match="position 5 is beyond the file's 2 columns"):
        _task(_write(tmp_path, "tsv", False), header=False, text_columns=[5], label_column=1)


def test_split_rows_is_disjoint_stratified_and_reproducible():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    train, held = split_rows(100, 20, seed=3, labels=labels)
    assert not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert Counter(labels[i] for i in held) == {"a": 12, "b": 6, "c": 2}
    assert split_rows(100, 20, seed=3, labels=labels) == (train, held)
    assert split_rows(100, 20, seed=4, labels=labels)[1] != held
    odd_labels = ["x"] * 4 + ["y"] * 3
    odd = split_rows(7, 3, seed=0, labels=odd_labels)[1]  # exact shares 1.71 / 1.29: largest remainder
    assert Counter(odd_labels[i] for i in odd) == {"x": 2, "y": 1}
    assert held_out_count(100, 0.1) == 10 and held_out_count(100, 25) == 25
    with pytest.raises(DataError, match="leave none"):
        held_out_count(10, 10)


def test_split_dev_makes_a_stratified_dev_split_and_scores_the_dev_file_as_test(tmp_path):
    path = _write(tmp_path, "tsv", True)
    (tmp_path / "d").mkdir()
    dev = _write(tmp_path / "d", "tsv", True)
    task = _task(path, split_dev=0.25, dev_file=str(dev))
    assert list(task.dev_sets) == ["dev", "test"]
    assert len(task.dev_sets["dev"]) == 6 and len(task.raw_train) == 18
    # Six of four equal classes: one each, and the two remaining rows by largest remainder (ties by name).
    assert Counter(task.dev_sets["dev"]["label"][:]) == {0: 2, 1: 2, 2: 1, 3: 1}
    assert task.describe()["split"]["held_out_rows"] == 6
    again = _task(path, split_dev=0.25)
    assert again.dev_sets["dev"]["text"][:] == task.dev_sets["dev"]["text"][:]


def test_texts_shared_by_training_and_evaluation_data_are_counted_and_can_be_dropped(tmp_path):
    path = _write(tmp_path, "tsv", True)  # every text appears 3 times
    task = _task(path, split_dev=4)
    assert any("4 of 4 dev texts also appear in the training data" in note for note in task.notes)
    dropped = _task(path, split_dev=4, drop_overlap=True)
    assert len(dropped.raw_train) == 20 - 8 and any("dropped 8 training rows" in n for n in dropped.notes)
    shared = set(dropped.dev_sets["dev"]["text"][:]) & set(dropped.raw_train["text"][:])
    assert not shared
    from datasets import Dataset

    train = Dataset.from_dict({"t": ["A b", "c"]})
    assert overlap(train, {"dev": Dataset.from_dict({"t": ["a  B", "d"]})}, ["t"], drop=False)[1] == {
        "dev": 1
    }


def test_an_empty_parquet_file_gets_the_same_message_as_an_empty_csv(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError, match=r"empty\.parquet: has columns but no rows"):
        _task(empty, text_columns=["text"], label_column="label")
