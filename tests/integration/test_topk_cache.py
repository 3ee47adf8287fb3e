"""The top-k teacher cache of token-level KD: exact at k = vocabulary, reused across runs, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from distil.errors import ConfigError
from distil.methods.kd import KD
from distil.training.loop import train
from helpers import tiny_run, train_interrupted
from qa_lm_helpers import lm_run

VOCAB = 128  # the tiny models' embedding table


def _student(cfg) -> dict:
    return load_file(Path(cfg.run_dir) / "student" / "model.safetensors")


def _assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert float((a[key] - b[key]).abs().max()) <= atol, key


def _cfg(tmp_path: Path, name: str, **train_):
    overrides = {"run_dir": str(tmp_path / name), "data.dev_file": None, "train.epochs": 2}
    return lm_run(tmp_path, "kd", **overrides, **{f"train.{k}": v for k, v in train_.items()})


def test_a_cache_of_the_whole_vocabulary_gives_the_student_of_the_teacher_itself(tmp_path, capsys):
    plain = _cfg(tmp_path, "plain")
    train(plain, progress=False)
    cached = _cfg(tmp_path, "cached", cache_teacher_topk=VOCAB)
    capsys.readouterr()
    train(cached, progress=False)
    assert "teacher top-k cache: wrote" in capsys.readouterr().out
    _assert_same(_student(plain), _student(cached), atol=1e-5)
    again = _cfg(
        tmp_path, "again", cache_teacher_topk=VOCAB, lr=1e-4
    )  # another student, same teacher and data
    train(again, progress=False)
    assert "teacher top-k cache: reusing" in capsys.readouterr().out


def test_resume_with_a_top_k_cache_is_exact(tmp_path):
    full = _cfg(tmp_path, "full", cache_teacher_topk=8, checkpoint_every=2)
    train(full, progress=False)
    broken = _cfg(tmp_path, "broken", cache_teacher_topk=8, checkpoint_every=2)
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(broken, KD, 4, patch)
    train(broken, resume=True, progress=False)
    _assert_same(_student(full), _student(broken), atol=1e-6)


def test_a_top_k_cache_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(ConfigError, match="data.task=lm"):
        tiny_run(tmp_path, "kd", **{"train.cache_teacher_topk": 16})
    # Refused when the config is built (so `distil validate` says it), not once training starts.
    with pytest.raises(ConfigError, match="cache_teacher_topk: method 'lwd' needs more"):
        lm_run(tmp_path, "lwd", **{"train.cache_teacher_topk": 16})
    # Divergences other than the forward KL need the teacher's whole distribution.
    with pytest.raises(ConfigError, match="method.divergence=forward_kl"):
        lm_run(tmp_path, "kd", **{"train.cache_teacher_topk": 16, "method.divergence": "reverse_kl"})


def test_a_top_k_above_the_vocabulary_is_refused_before_anything_is_written(tmp_path):
    cfg = _cfg(tmp_path, "too-many", cache_teacher_topk=VOCAB + 1)
    with pytest.raises(
        ConfigError, match=rf"cache_teacher_topk={VOCAB + 1} is above the teacher's {VOCAB}-token"
    ):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


@pytest.mark.parametrize("damaged", ["index.npy", "values.npy", "rest.npy", "meta.json"])
def test_a_damaged_cache_is_named_and_built_again(tmp_path, capsys, damaged):
    first = _cfg(tmp_path, "first", cache_teacher_topk=8)
    train(first, progress=False)
    (meta,) = tmp_path.rglob("meta.json")
    (meta.parent / damaged).write_bytes(b"\x93NUMPY not really")
    capsys.readouterr()
    again = _cfg(tmp_path, "again", cache_teacher_topk=8)
    train(again, progress=False)
    out = capsys.readouterr().out
    assert "is damaged" in out and "building it again" in out and "teacher top-k cache: wrote" in out
    _assert_same(_student(first), _student(again), atol=1e-6)
