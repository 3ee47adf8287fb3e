"""Task table, loaders, validation errors, tokenisation, padding and batch order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distil.data.batching import collate, epoch_batches, tokenize
from distil.data.readers import resolve_data_dir, subset
from distil.data.spec import custom_task
from distil.errors import ConfigError, DataError
from distil.metrics import glue_metrics
from distil.tasks.custom.reader import infer_label_names, load_custom
from distil.tasks.glue.reader import load_glue_split
from distil.tasks.glue.table import GLUE_TASKS, get_task
from factories import tiny_tokenizer

DATA = Path(__file__).parents[1] / "assets" / "data"
CUSTOM = DATA / "custom"
REAL = Path(os.environ.get("DISTIL_DATA") or Path(__file__).parents[3] / "shared" / "data")
REVIEWS = custom_task(["text"], "sentiment", label_names=["negative", "positive"])


# ---- task table ---------------------------------------------------------------------------------


def test_glue_table_follows_hub_conventions():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert GLUE_TASKS["rte"].label_names == GLUE_TASKS["qnli"].label_names == ("entailment", "not_entailment")
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["wnli"].label_names == ("not_entailment", "entailment")
    assert GLUE_TASKS["mnli"].dev_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["mnli"].layout.file_for("validation_mismatched") == "dev_mismatched.tsv"
    stsb = GLUE_TASKS["stsb"]
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.label_names is None
    mains = {name: spec.main_metric for name, spec in GLUE_TASKS.items()}
    assert mains["cola"] == "matthews_correlation" and mains["stsb"] == "spearmanr"
    assert mains["mrpc"] == mains["qqp"] == "f1" and mains["sst2"] == "accuracy"
    for spec in GLUE_TASKS.values():
        assert spec.main_metric in spec.metrics and spec.hf_config == spec.name
        preds, refs = ([1.0, 2.0, 0.5], [0.0, 2.0, 1.0]) if spec.is_regression else ([0, 1, 1], [0, 1, 0])
        assert tuple(glue_metrics(spec.name, preds, refs)) == spec.metrics


def test_get_task_aliases_and_hint():
    assert get_task("SST-2") is GLUE_TASKS["sst2"]
    assert get_task("mnli_mismatched") is GLUE_TASKS["mnli"]
    with pytest.raises(ConfigError, match=r"valid tasks: cola.*Did you mean 'qnli'\?"):
        get_task("qlni")


def test_custom_task_checks():
    assert REVIEWS.num_labels == 2 and REVIEWS.metrics == ("accuracy", "f1")
    assert custom_task("text", "y", is_regression=True).text_columns == ("text",)
    with pytest.raises(ConfigError, match="data.label_names"):
        custom_task(["text"], "y")
    inferred = custom_task(
        ["text"], "sentiment", label_names=infer_label_names(CUSTOM / "reviews.csv", "sentiment")
    )
    assert inferred.label_names == ("negative", "positive")
    with pytest.raises(ConfigError, match="data.text_columns"):
        custom_task(["a", "b", "c"], "y", label_names=["0", "1"])
    with pytest.raises(ConfigError, match="is_regression"):
        custom_task(["a"], "y", is_regression=True, label_names=["0", "1"])


# ---- GLUE files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "first_text", "first_label"),
    [
        ("sst2", "a gorgeous , witty film ", 1),
        ("cola", "Our friends won't buy this analysis, let alone the next one we propose.", 1),
        ("mrpc", "The cat sat on the mat.", 1),
        ("rte", "No Weapons of Mass Destruction Found in Iraq Yet.", 1),
        ("stsb", "A plane is taking off.", 5.0),
    ],
)
def test_official_layouts(task, first_text, first_label):
    spec = get_task(task)
    train = load_glue_split(spec, "train", DATA)
    dev = load_glue_split(spec, "validation", DATA)
    assert (len(train), len(dev)) == (12, 6)  # CoLA: no row lost to a header; dev lacks a final newline
    assert train.column_names == [*spec.text_columns, "label"]
    assert train[0][spec.text_columns[0]] == first_text
    assert train[0]["label"] == first_label
    assert isinstance(train[0]["label"], float if spec.is_regression else int)


def test_text_kept_verbatim():
    sst = list(load_glue_split("sst2", "train", DATA)["sentence"])
    assert '" the film " is good ' in sst  # quoting=3: literal quotes survive
    assert {"null", "NA", ""} <= set(sst)  # keep_default_na=False: no NaN, empty text allowed
    mrpc = load_glue_split("mrpc", "validation", DATA)  # its header starts with a BOM before "Quality"
    assert mrpc[0]["sentence2"] == '"The pie business does not fit our strategy.'
    assert list(mrpc["label"]) == [1, 0, 1, 0, 1, 1]
    rte = load_glue_split("rte", "train", DATA)
    assert sum(rte["label"]) == 6 and rte[2]["label"] == 0  # entailment = 0


def test_data_dir_may_be_the_glue_folder():
    assert len(load_glue_split("cola", "validation", DATA / "glue")) == 6


def test_glue_split_and_task_errors():
    with pytest.raises(ConfigError, match="Did you mean 'validation_matched'"):
        load_glue_split("mnli", "validation", DATA)
    with pytest.raises(ConfigError, match="load_custom"):
        load_glue_split(REVIEWS, "train", DATA)


def test_missing_glue_file_says_where(tmp_path):
    (tmp_path / "glue" / "QNLI").mkdir(parents=True)
    (tmp_path / "glue" / "QNLI" / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n")
    with pytest.raises(DataError) as err:
        load_glue_split("qnli", "train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "glue" / "QNLI" / "train.tsv") in message and "['dev.tsv']" in message
    assert "--data-dir" in message and "DISTIL_DATA" in message


def test_no_data_dir_offline_says_where(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"<data-dir>/glue/SST-2/train\.tsv.*DISTIL_DATA"):
        load_glue_split("sst2", "train", None)


def test_wrong_glue_layout(tmp_path):
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=r"no text column 'sentence'.*\['text', 'label'\].*GLUE SST-2"):
        load_glue_split("sst2", "validation", tmp_path)
    (tmp_path / "glue" / "CoLA").mkdir()
    (tmp_path / "glue" / "CoLA" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="expected 4 .* without a header"):
        load_glue_split("cola", "validation", tmp_path)


@pytest.mark.skipif(not (REAL / "glue").is_dir(), reason="real GLUE data absent")
def test_real_glue_dev_files():
    sst = load_glue_split("sst2", "validation", REAL)
    assert len(sst) == 872 and sst[0]["label"] == 1
    assert sst[0]["sentence"] == "it 's a charming and often affecting journey . "
    mrpc = load_glue_split("mrpc", "validation", REAL)
    assert len(mrpc) == 408 and mrpc[0]["label"] == 1
    assert mrpc[0]["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'


# ---- custom files and validation ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.jsonl"])
def test_custom_reviews(name):
    ds = load_custom(CUSTOM / name, REVIEWS)
    assert ds.column_names == ["text", "label"] and len(ds) == 12
    assert ds[2] == {"text": 'She said "wow", twice.', "label": 1}
    assert ds[4]["text"] == "" and ds[5]["text"] == "null" and ds[7]["text"] == "Line one\nline two"


def test_custom_pairs_tsv_regression():
    task = custom_task(["question", "candidate"], "score", is_regression=True)
    ds = load_custom(CUSTOM / "pairs.tsv", task)
    assert ds[2]["question"] == 'What does "kd" mean?' and list(ds["label"]) == [1.0, 0.0] * 3


def test_infer_label_names(tmp_path):
    assert infer_label_names(CUSTOM / "reviews.jsonl", "sentiment") == ("negative", "positive")
    (tmp_path / "n.csv").write_text("t,y\na,10\nb,2\nc,1\n")
    assert infer_label_names(tmp_path / "n.csv", "y") == ("1", "2", "10")
    (tmp_path / "one.csv").write_text("t,y\na,1\n")
    with pytest.raises(DataError, match="fewer than two"):
        infer_label_names(tmp_path / "one.csv", "y")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*does not exist"):
        load_custom(tmp_path / "nope.csv", REVIEWS)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv.*is empty"):
        load_custom(tmp_path / "empty.csv", REVIEWS)
    (tmp_path / "header.tsv").write_text("text\tsentiment\n")
    with pytest.raises(DataError, match=r"header\.tsv.*no rows"):
        load_custom(tmp_path / "header.tsv", REVIEWS)
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(DataError, match=r"x\.parquet: cannot be read as Parquet"):
        load_custom(tmp_path / "x.parquet", REVIEWS)
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"\.csv, \.tsv, \.jsonl \(JSON Lines\) or \.parquet"):
        load_custom(tmp_path / "x.xlsx", REVIEWS)


def test_missing_column_lists_columns():
    task = custom_task(["review"], "sentiment", label_names=["negative", "positive"])
    with pytest.raises(DataError) as err:
        load_custom(CUSTOM / "reviews.csv", task)
    message = str(err.value)
    assert "reviews.csv" in message and "'review'" in message and "data.text_columns" in message
    assert "['text', 'sentiment', 'id']" in message
    with pytest.raises(DataError, match=r"\(data.label_column\) 'stars'.*\['id', 'text', 'sentiment'\]"):
        load_custom(CUSTOM / "reviews.jsonl", custom_task(["text"], "stars", label_names=["a", "b"]))


def test_label_out_of_range_names_row(tmp_path):
    (tmp_path / "bad.tsv").write_text("text\tsentiment\ngood\tpositive\nmeh\tneutral\n")
    with pytest.raises(DataError) as err:
        load_custom(tmp_path / "bad.tsv", REVIEWS)
    message = str(err.value)
    assert "bad.tsv" in message and "data row 2" in message and "'neutral'" in message
    assert "['negative', 'positive']" in message and "data.label_names" in message


def test_stray_delimiter_is_an_error(tmp_path):
    (tmp_path / "extra.tsv").write_text("text\tsentiment\ngood\tpositive\nbad\tnegative\textra\n")
    with pytest.raises(DataError, match=r"extra\.tsv.*Expected 2 fields in line 3"):
        load_custom(tmp_path / "extra.tsv", REVIEWS)


def test_unparseable_regression_label(tmp_path):
    (tmp_path / "bad.csv").write_text("question,candidate,score\na,b,1.5\nc,d,high\n")
    task = custom_task(["question", "candidate"], "score", is_regression=True)
    with pytest.raises(DataError, match=r"bad\.csv: data row 2: label 'high'.*not a finite number"):
        load_custom(tmp_path / "bad.csv", task)


def test_subset_is_seeded():
    ds = load_glue_split("sst2", "train", DATA)
    first, again = subset(ds, 5, seed=3), subset(ds, 5, seed=3)
    assert len(first) == 5 and list(first["sentence"]) == list(again["sentence"])
    assert list(subset(ds, 5, seed=4)["sentence"]) != list(first["sentence"])
    assert subset(ds, None, seed=0) is ds and subset(ds, 100, seed=0) is ds
    with pytest.raises(ConfigError, match="data.train_subset"):
        subset(ds, 0, seed=0)


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    work, shared, env = tmp_path / "work", tmp_path / "shared" / "data", tmp_path / "env"
    for folder in (work, env):
        folder.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("DISTIL_DATA", raising=False)
    assert resolve_data_dir(None) is None
    shared.mkdir(parents=True)
    assert resolve_data_dir(None) == shared.resolve()
    monkeypatch.setenv("DISTIL_DATA", str(env))
    assert resolve_data_dir(None) == env
    assert resolve_data_dir(DATA) == DATA
    with pytest.raises(DataError, match=r"does not exist.*--data-dir"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.setenv("DISTIL_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="DISTIL_DATA"):
        resolve_data_dir(None)


# ---- tokenisation, padding, batch order -----------------------------------------------------------


def test_tokenize_and_collate():
    tokenizer = tiny_tokenizer()
    task = get_task("mrpc")
    tokens = tokenize(load_glue_split(task, "validation", DATA), tokenizer, task, max_length=48)
    assert tokens.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels", "idx"]
    lengths = [len(ids) for ids in tokens["input_ids"]]
    assert max(lengths) == 48 and len(set(lengths)) > 2  # the longest pair is truncated; nothing is padded
    rows = [tokens[i] for i in range(len(tokens))]
    batch = collate(rows, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (6, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    padding = batch["attention_mask"] == 0
    assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()
    assert (batch["token_type_ids"][padding] == 0).all() and batch["token_type_ids"].max() == 1
    assert batch["labels"].tolist() == [1, 0, 1, 0, 1, 1] and batch["idx"].tolist() == list(range(6))
    assert str(batch["labels"].dtype) == str(batch["idx"].dtype) == "torch.int64"


def test_collate_regression_and_plain_lists():
    rows = [{"input_ids": [2, 5, 3], "labels": 4.5, "idx": 0}, {"input_ids": [2, 3], "labels": 1.0, "idx": 1}]
    batch = collate(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert str(batch["labels"].dtype) == "torch.float32" and batch["labels"].tolist() == [4.5, 1.0]


def _padded(lengths, batches):
    return sum(max(lengths[i] for i in b) for b in batches) / len(batches)


def test_epoch_batches_deterministic_and_complete():
    lengths = [(i * 37) % 50 + 1 for i in range(103)]
    one = epoch_batches(lengths, 8, seed=1, epoch=0)
    assert one == epoch_batches(lengths, 8, seed=1, epoch=0)
    assert one != epoch_batches(lengths, 8, seed=1, epoch=1)
    assert one != epoch_batches(lengths, 8, seed=2, epoch=0)
    assert sorted(i for b in one for i in b) == list(range(103)) and len(one[-1]) == 7
    assert len(epoch_batches(lengths, 8, seed=1, epoch=0, drop_last=True)) == 12
    assert epoch_batches(lengths, 50, seed=1, epoch=0, shuffle=False)[0] == list(range(50))
    grouped = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == list(range(103))
    dropped = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True, drop_last=True)
    assert len(dropped) == 12 and all(len(b) == 8 for b in dropped)


def test_group_by_length_cuts_padding():
    # Skewed like real text: mostly short rows, a few long ones.
    lengths = [5 + (i * 7919) % 11 if i % 10 else 60 + (i * 31) % 40 for i in range(2000)]
    plain = epoch_batches(lengths, 16, seed=0, epoch=0)
    grouped = epoch_batches(lengths, 16, seed=0, epoch=0, group_by_length=True)
    assert _padded(lengths, grouped) < 0.6 * _padded(lengths, plain)
    # Still random: batch order differs between epochs.
    assert grouped != epoch_batches(lengths, 16, seed=0, epoch=1, group_by_length=True)


def test_the_card_lists_the_hub_datasets_the_task_recorded():
    from distil.card import _datasets
    from distil.tasks import TASKS

    assert TASKS["glue"].hub_datasets == ("nyu-mll/glue",) and TASKS["custom"].hub_datasets == ()
    recorded = {"built": {"hub_datasets": ["rajpurkar/squad_v2"]}, "config": {"data": {"task": "sst2"}}}
    assert _datasets(recorded) == ["rajpurkar/squad_v2"]  # the task's word, not the name's
    older = {"built": {}, "config": {"data": {"task": "mnli"}}}  # a recipe written before tasks recorded it
    assert _datasets(older) == ["nyu-mll/glue"]
    assert _datasets({"built": {"hub_datasets": []}, "config": {"data": {"task": "custom"}}}) == []
