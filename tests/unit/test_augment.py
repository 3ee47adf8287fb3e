"""Transfer-set augmentation: embedding neighbours, perturbations, and a file the GLUE loader takes back."""

import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from distil.data.augment import (
    AugmentOptions,
    augment_rows,
    augment_text,
    embedding_neighbours,
    write_task_file,
)
from distil.errors import ConfigError, DataError
from distil.tasks import GlueData, GlueTask
from distil.tasks.glue.table import get_task
from factories import tiny_tokenizer

DATA = Path(__file__).parents[1] / "assets" / "data"


def _embeddings_with_pairs(pairs: list[tuple[str, str]]) -> torch.Tensor:
    tok = tiny_tokenizer()
    emb = torch.randn(len(tok), 16, generator=torch.Generator().manual_seed(0))
    for a, b in pairs:
        ia, ib = tok.convert_tokens_to_ids([a, b])
        emb[ib] = emb[ia] + 1e-3
    return emb


def test_neighbours_are_the_nearest_whole_words():
    tok = tiny_tokenizer()
    emb = _embeddings_with_pairs([("good", "great"), ("bad", "awful")])
    table = embedding_neighbours(emb, tok, ["good", "bad", "film", "goodness", "##s"], k=3)
    assert table["good"][0] == "great" and table["bad"][0] == "awful"
    # Not a single token of the vocabulary: no entry rather than a neighbour of a piece of it.
    assert "goodness" not in table and "##s" not in table
    for word, found in table.items():
        assert len(found) == 3 and word not in found
        assert all(w.isalpha() and not w.startswith("##") and "[" not in w for w in found)


def test_perturbations_follow_their_probabilities():
    rng = random.Random(0)
    table = {"good": ["great"], "film": ["movie"]}
    text = "a good film is not bad"
    assert augment_text(text, rng, table, "[MASK]", AugmentOptions(p_mask=0, p_replace=0, p_ngram=0)) == text
    masked = augment_text(text, rng, table, "[MASK]", AugmentOptions(p_mask=1, p_replace=0, p_ngram=0))
    assert masked == " ".join(["[MASK]"] * 6)
    swapped = augment_text(text, rng, table, "[MASK]", AugmentOptions(p_mask=0, p_replace=1, p_ngram=0))
    assert swapped == "a great movie is not bad"
    for _ in range(20):
        cut = augment_text(
            text, rng, table, "[MASK]", AugmentOptions(p_mask=0, p_replace=0, p_ngram=1, max_ngram=3)
        )
        assert 1 <= len(cut.split()) <= 3 and cut in text


def test_rows_keep_the_originals_first_without_duplicates_and_are_seeded():
    ds = Dataset.from_dict(
        {"sentence": ["a good film", "bad", "the movie was very good"], "label": [1, 0, 1]}
    )
    spec = get_task("sst2")
    table = {"good": ["great"], "film": ["movie"]}
    opts = AugmentOptions(copies=6, p_mask=0.3, p_replace=0.3, seed=5)
    rows = augment_rows(ds, spec, table, "[MASK]", opts)
    assert rows[:3] == [(["a good film"], 1), (["bad"], 0), (["the movie was very good"], 1)]
    texts = [tuple(t) for t, _ in rows]
    assert len(texts) == len(set(texts)) and len(rows) > 3
    assert all(label in (0, 1) for _, label in rows) and all(t[0] for t in texts)
    assert rows == augment_rows(ds, spec, table, "[MASK]", opts)
    assert rows != augment_rows(
        ds, spec, table, "[MASK]", AugmentOptions(copies=6, p_mask=0.3, p_replace=0.3, seed=6)
    )
    # "bad" has no neighbours: its only possible copy is the mask (kept once).
    assert [t for t, label in rows[3:] if label == 0] in ([], [["[MASK]"]])


@pytest.mark.parametrize(
    "kwargs",
    [{"copies": 0}, {"p_mask": 1.5}, {"p_ngram": -0.1}, {"p_mask": 0.6, "p_replace": 0.6}, {"max_ngram": 0}],
)
def test_options_reject_bad_values(kwargs):
    with pytest.raises(ConfigError):
        AugmentOptions(**kwargs)


def test_written_file_replaces_a_glue_training_split(tmp_path):
    sst2 = tmp_path / "sst2.tsv"
    rows = [(["a good\tfilm"], 1), (["bad\nmovie"], 0)]
    write_task_file(sst2, get_task("sst2"), rows)
    task = GlueTask(GlueData(task="sst2", data_dir=str(DATA), train_file=str(sst2)), seed=0)
    assert task.train_set["sentence"][:] == ["a good film", "bad movie"]
    assert task.train_set["label"][:] == [1, 0]
    assert len(task.dev_set) > 0  # the dev split still comes from the GLUE folder

    stsb = tmp_path / "stsb.tsv"
    write_task_file(stsb, get_task("stsb"), [(["a man plays", "a man runs"], 3.5)])
    task = GlueTask(GlueData(task="stsb", data_dir=str(DATA), train_file=str(stsb)), seed=0)
    assert task.train_set["label"][:] == [3.5] and task.train_set["sentence2"][:] == ["a man runs"]

    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        write_task_file(sst2, get_task("sst2"), rows[:1])
    assert len(sst2.read_text().splitlines()) == 3  # untouched
    write_task_file(sst2, get_task("sst2"), rows[:1], overwrite=True)
    assert len(sst2.read_text().splitlines()) == 2
    with pytest.raises(DataError, match="give it a .tsv name"):
        write_task_file(tmp_path / "x.csv", get_task("sst2"), rows)


def test_a_glue_file_in_other_columns_says_which_it_needs(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\na film\t1\n")
    with pytest.raises(DataError, match=r"needs the columns \['sentence', 'label'\]"):
        GlueTask(GlueData(task="sst2", data_dir=str(DATA), train_file=str(bad)), seed=0)
    bad.write_text("sentence\tlabel\na film\tpositive\n")
    with pytest.raises(DataError, match="label 'positive'"):
        GlueTask(GlueData(task="sst2", data_dir=str(DATA), train_file=str(bad)), seed=0)
