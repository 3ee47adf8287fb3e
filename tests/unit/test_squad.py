"""SQuAD: official EM/F1, file validation, the article split, windowed features and span decoding."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from distil.config import build_run_config
from distil.errors import ConfigError, DataError
from distil.tasks import SquadData, SquadTask, load_task
from distil.tasks.squad.decode import decode_answers
from distil.tasks.squad.features import build_features
from distil.tasks.squad.metrics import normalize_answer, squad_metrics
from distil.tasks.squad.reader import check_answer_spans, read_squad, split_by_title
from factories import tiny_tokenizer
from qa_lm_helpers import SQUAD_V1, SQUAD_V2

REAL_V1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad" / "v1.1" / "dev-v1.1.json"


def _m(pred, refs):
    return squad_metrics({"q": pred}, {"q": refs})


# --- official metric -------------------------------------------------------------------------------


def test_normalisation_lowercases_and_drops_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Denver-Broncos!! ") == "denverbroncos"
    assert normalize_answer("a cat and an apple, the end.") == "cat and apple end"
    assert normalize_answer("Theatre anthem") == "theatre anthem"  # articles only as whole words


@pytest.mark.parametrize(
    ("pred", "refs", "em", "f1"),
    [
        ("The Denver Broncos!", ["denver broncos"], 100.0, 100.0),
        ("  denver\tbroncos ", ["Denver Broncos"], 100.0, 100.0),
        ("a cat", ["the cat"], 100.0, 100.0),
        ("denver broncos team", ["denver broncos"], 0.0, 80.0),  # P 2/3, R 1
        ("the the cat cat", ["cat"], 0.0, 200 / 3),  # clipped counts: 1 common token, P 1/2, R 1
        ("denver broncos", ["broncos", "denver broncos team"], 0.0, 80.0),  # max over references
        ("broncos", ["denver broncos", "Broncos."], 100.0, 100.0),
        ("", [], 100.0, 100.0),  # v2: no answer predicted for an unanswerable question
        ("denver", [], 0.0, 0.0),
        ("", ["denver"], 0.0, 0.0),
        ("", ["the"], 100.0, 100.0),  # references that normalise to nothing are dropped: no answer
        ("cat", ["dog"], 0.0, 0.0),
    ],
)
def test_squad_metrics_hand_computed(pred, refs, em, f1):
    out = _m(pred, refs)
    assert out["exact_match"] == pytest.approx(em) and out["f1"] == pytest.approx(f1)


def test_squad_metrics_averages_over_references_and_missing_predictions_score_zero():
    refs = {"a": ["cat"], "b": ["dog"], "c": [], "d": ["man"]}
    preds = {"a": "the cat", "b": "dog runs", "c": "", "extra": "ignored"}  # "d" has no prediction
    out = squad_metrics(preds, refs)
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4 * 100)
    with pytest.raises(ValueError, match="at least one reference"):
        squad_metrics({}, {})


# --- reading and validation ------------------------------------------------------------------------


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _file(qas, context="the cat runs .", version="1.1"):
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_read_squad_flattens_questions():
    ds = read_squad(SQUAD_V1, version_2=False)
    assert len(ds) == 11 and ds.column_names == [
        "id",
        "title",
        "context",
        "question",
        "answer_texts",
        "answer_starts",
    ]
    row = ds[0]
    assert row["id"] == "d1" and row["title"] == "Dogs" and row["answer_texts"] == ["the dog", "dog"]
    assert row["context"][row["answer_starts"][1] :].startswith("dog")
    v2 = read_squad(SQUAD_V2, version_2=True)
    assert sum(not a for a in v2["answer_texts"]) == 4 and len(v2) == 15


@pytest.mark.parametrize(
    ("content", "version_2", "message"),
    [
        ("{not json", False, "not a UTF-8 JSON file"),
        ({"version": "1.1"}, False, "the top level needs a list field 'data'"),
        ({"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}, False, "needs a str field 'context'"),
        (_file([{"id": "x", "question": "q", "answers": [{"text": "cat"}]}]), False, "'answer_start'"),
        (
            _file([{"id": "x", "question": "q", "answers": [{"text": "cat", "answer_start": 4}]}] * 2),
            False,
            "twice",
        ),
        (_file([{"id": "x", "question": "q", "answers": [], "is_impossible": True}]), False, "squad_v2"),
        (_file([{"id": "x", "question": "q", "answers": []}]), True, "no answers and is not marked"),
        (_file([{"id": "x", "question": "q"}]), False, "hidden test set"),
        (
            _file(
                [
                    {
                        "id": "x",
                        "question": "q",
                        "answers": [{"text": "cat", "answer_start": 4}],
                        "is_impossible": True,
                    }
                ]
            ),
            True,
            "marked is_impossible but has answers",
        ),
        ({"data": []}, False, "no questions found"),
    ],
)
def test_read_squad_rejects_bad_files_naming_file_and_fix(tmp_path, content, version_2, message):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        read_squad(path, version_2=version_2)
    assert str(path) in str(err.value)


def test_training_split_needs_answers_at_their_offsets(tmp_path):
    path = _write(
        tmp_path, _file([{"id": "x", "question": "q", "answers": [{"text": "cat", "answer_start": 0}]}])
    )
    with pytest.raises(DataError, match=r"not at its answer_start.*\['x'\]"):
        check_answer_spans(read_squad(path, version_2=False), path)
    # A file without answers (like a hidden test set) is rejected before any model is loaded.
    no_answers = _write(
        tmp_path, _file([{"id": "x", "question": "q", "answers": []}], version="v2.0"), "test.json"
    )
    cfg = SquadData(
        task="squad_v2", dev_file=str(SQUAD_V2), train_file=str(no_answers), max_length=48, doc_stride=16
    )
    with pytest.raises(DataError, match="no answers and is not marked is_impossible"):
        load_task(cfg, 0)


def test_missing_files_and_bad_settings_are_reported(tmp_path):
    with pytest.raises(DataError, match="SQuAD dev file not found"):
        load_task(
            SquadData(
                task="squad", dev_file=str(tmp_path / "x.json"), data_dir=str(tmp_path), max_length=384
            ),
            0,
        )
    with pytest.raises(DataError, match=r"data.split_dev"):  # no training file: the fix names split_dev
        load_task(SquadData(task="squad", dev_file=str(SQUAD_V1), data_dir=str(tmp_path), max_length=384), 0)
    with pytest.raises(ConfigError, match="doc_stride.*max_length=384"):
        SquadData(task="squad", max_length=128)  # too short for the default stride
    with pytest.raises(ConfigError, match="split_dev must be a fraction in"):
        SquadData(task="squad", split_dev=1.5, max_length=384)
    with pytest.raises(
        ConfigError, match="data.split_dev"
    ):  # a corpus has no evaluation to hold rows out for
        build_run_config(
            {"data": {"task": "corpus", "corpus": ["x"], "split_dev": 0.2}, "method": {"name": "minilmv2"}}
        )


def test_relative_squad_paths_are_looked_up_under_the_data_dir():
    cfg = SquadData(
        task="squad",
        dev_file="squad/tiny-v1.1.json",
        data_dir=str(SQUAD_V1.parents[1]),
        split_dev=0.25,
        max_length=384,
    )
    assert load_task(cfg, 0).describe()["dev_file"] == str(SQUAD_V1)


# --- article split ---------------------------------------------------------------------------------


def test_split_by_title_is_disjoint_deterministic_and_seeded():
    ds = read_squad(SQUAD_V1, version_2=False)
    train, held, info = split_by_title(ds, 0.25, seed=0)
    assert info["train_articles"] == 3 and info["held_out_articles"] == 1
    assert not set(train["title"]) & set(held["title"]) and len(train) + len(held) == len(ds)
    assert set(held["title"]) == set(info["held_out_titles"])
    again = split_by_title(ds, 0.25, seed=0)[1]
    assert again["id"] == held["id"]
    held_sets = {tuple(sorted(set(split_by_title(ds, 0.25, seed=s)[1]["title"]))) for s in range(8)}
    assert len(held_sets) > 1  # the seed matters
    assert split_by_title(ds, 0.01, seed=0)[2]["held_out_articles"] == 1  # at least one article
    assert split_by_title(ds, 0.99, seed=0)[2]["held_out_articles"] == 3  # at least one left to train
    by_count = split_by_title(ds, 3, seed=0)[1]  # whole articles until at least 3 questions
    assert len(by_count) >= 3 and len(set(by_count["title"])) < len(set(ds["title"]))


def test_task_describes_its_split():
    task = SquadTask(
        SquadData(task="squad", dev_file=str(SQUAD_V1), split_dev=0.25, max_length=48, doc_stride=16), 0
    )
    info = task.describe()
    assert info["split"] == "dev file split by article title" and info["split_seed"] == 0
    assert info["train_examples"] + info["dev_examples"] == 11


# --- features --------------------------------------------------------------------------------------


def _features(version_2=False, max_length=48, stride=16, keep_offsets=True):
    ds = read_squad(SQUAD_V2 if version_2 else SQUAD_V1, version_2=version_2)
    return ds, build_features(ds, tiny_tokenizer(), max_length, stride, keep_offsets=keep_offsets)


def _char_span(feature, start, end):
    offsets = np.asarray(feature["offsets"]).reshape(-1, 2)
    return int(offsets[start, 0]), int(offsets[end, 1])


def test_doc_stride_windows_map_answers_to_token_spans_and_back():
    ds, feats = _features()
    per_example = {}
    for f in feats:
        per_example.setdefault(f["example"], []).append(f)
        assert len(f["input_ids"]) <= 48 and f["cls_index"] == 0
    long_ids = [e for e, fs in per_example.items() if len(fs) > 1]
    assert long_ids, "the long contexts must be cut into several windows"
    for e, fs in per_example.items():
        row = ds[e]
        found = 0
        for f in fs:
            start, end = f["labels"]
            if (start, end) == (0, 0):  # the answer is not wholly inside this window
                continue
            s, t = _char_span(f, start, end)
            assert row["context"][s:t] == row["answer_texts"][0]
            assert s == row["answer_starts"][0]
            found += 1
        assert found >= 1, row["id"]
    # Consecutive windows of one context share exactly doc_stride context tokens.
    for e in long_ids:
        spans = [
            [tuple(p) for p in np.asarray(f["offsets"]).reshape(-1, 2) if p[0] >= 0] for f in per_example[e]
        ]
        for a, b in itertools.pairwise(spans):
            assert a[-16:] == b[:16]


def test_unanswerable_questions_point_at_cls():
    ds, feats = _features(version_2=True)
    impossible = {i for i, a in enumerate(ds["answer_texts"]) if not a}
    labels = [f["labels"] for f in feats if f["example"] in impossible]
    assert labels and all(lab == [0, 0] for lab in labels)


def test_long_questions_are_cut_to_leave_room_for_the_context(tmp_path):
    question = " ".join(["what is the cat"] * 20)
    path = _write(
        tmp_path, _file([{"id": "x", "question": question, "answers": [{"text": "cat", "answer_start": 4}]}])
    )
    feats = build_features(read_squad(path, version_2=False), tiny_tokenizer(), 32, 8, keep_offsets=True)
    assert len(feats) >= 1 and all(len(ids) <= 32 for ids in feats["input_ids"])
    with pytest.raises(ConfigError, match="fast tokenizer"):
        build_features(read_squad(path, version_2=False), object(), 32, 8, keep_offsets=False)


# --- decoding --------------------------------------------------------------------------------------


def _oracle_scores(feats, value=10.0):
    starts, ends = [], []
    for f in feats:
        n = len(f["input_ids"])
        s, e = np.zeros(n, np.float32), np.zeros(n, np.float32)
        s[f["labels"][0]] += value
        e[f["labels"][1]] += value
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_oracle_scores_decode_to_the_answers():
    ds, feats = _features()
    starts, ends = _oracle_scores(feats)
    preds = decode_answers(ds, feats, starts, ends)
    assert squad_metrics(preds, dict(zip(ds["id"], ds["answer_texts"], strict=True))) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }
    ds2, feats2 = _features(version_2=True)
    preds = decode_answers(ds2, feats2, *_oracle_scores(feats2), version_2=True)
    assert all(preds[q] == "" for q, a in zip(ds2["id"], ds2["answer_texts"], strict=True) if not a)
    assert (
        squad_metrics(preds, dict(zip(ds2["id"], ds2["answer_texts"], strict=True)))["exact_match"] == 100.0
    )


def _single(example_id):
    ds, feats = _features()
    e = ds["id"].index(example_id)
    rows = [i for i, f in enumerate(feats) if f["example"] == e]
    assert len(rows) == 1
    one = ds.select([e])
    feat = feats.select(rows).map(lambda r: {"example": 0})
    return one, feat, feat[0]


def test_decoding_skips_invalid_spans_and_respects_max_answer_length():
    one, feat, f = _single("c1")  # "the cat" in "the cat plays with a ball . ..."
    n = len(f["input_ids"])
    s_true, e_true = f["labels"]
    question_token = 1
    start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
    start[question_token] = 20.0  # best start, but in the question: never valid
    end[s_true - 1] = 20.0  # best end, but before the answer's start
    start[s_true], end[e_true] = 10.0, 9.0
    pred = decode_answers(one, feat, [start], [end], n_best=5)
    assert pred == {"c1": "the cat"}
    # A long span scores higher but exceeds max_answer_length.
    far = n - 2  # the last context token (before the final [SEP])
    end[far] = 15.0
    assert decode_answers(one, feat, [start], [end], n_best=5)["c1"] != "the cat"
    assert decode_answers(one, feat, [start], [end], n_best=5, max_answer_length=2)["c1"] == "the cat"


def test_null_threshold_decides_no_answer():
    one, feat, f = _single("c1")
    n = len(f["input_ids"])
    s_true, e_true = f["labels"]
    start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
    start[s_true], end[e_true] = 6.0, 6.0  # best span 12
    for cls_score, threshold, expected in [(5.0, 0.0, "the cat"), (8.0, 0.0, ""), (8.0, 5.0, "the cat")]:
        start[0] = end[0] = cls_score  # null score 2 * cls_score
        pred = decode_answers(one, feat, [start], [end], version_2=True, null_threshold=threshold)
        assert pred["c1"] == expected, (cls_score, threshold)
    # Without SQuAD 2.0 the null score is ignored.
    assert decode_answers(one, feat, [start], [end], version_2=False)["c1"] == "the cat"


@pytest.mark.skipif(not REAL_V1.is_file(), reason="shared SQuAD v1.1 dev file not available")
def test_real_v1_file_loads_validates_and_decodes():
    ds = read_squad(REAL_V1, version_2=False)
    assert len(ds) == 10570 and len(set(ds["title"])) == 48
    check_answer_spans(ds, REAL_V1)
    few = ds.select(range(40))
    feats = build_features(few, tiny_tokenizer(), 128, 32, keep_offsets=True)
    preds = decode_answers(few, feats, *_oracle_scores(feats))
    scores = squad_metrics(preds, dict(zip(few["id"], few["answer_texts"], strict=True)))
    assert scores["exact_match"] >= 95.0, scores


def test_split_dev_from_a_training_file_holds_out_its_articles(tmp_path):
    cfg = SquadData(task="squad", train_file=str(SQUAD_V1), dev_file=str(SQUAD_V1), split_dev=0.25,
                    max_length=384)  # fmt: skip
    task = load_task(cfg, 0)
    info = task.describe()
    assert info["train_file"] == str(SQUAD_V1) and info["held_out_articles"] == 1
    assert not set(task.train_examples["title"]) & set(task.dev_examples["title"])
