"""Long phases outside the training steps say how far they are: teacher caches and evaluation."""

import re

import distil.progress as progress
from distil.progress import Phase, clock
from distil.training.setup import build_run
from distil.training.teacher_cache import TeacherCache
from helpers import tiny_run


def test_a_phase_prints_counted_lines_and_a_closing_one_and_a_short_one_nothing(capsys):
    phase = Phase("caching", 4, every=0.0, quiet_below=0.0)
    for _ in range(4):
        phase.update()
    phase.close()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[distil] caching: 1/4 batches (25%), 00:00 elapsed, ~00:00 left")
    assert len(out) == 4 and re.fullmatch(r"\[distil\] caching: done, 4 batches in 00:00", out[-1])
    quiet = Phase("quick", 4)  # the defaults: a line every 30 s, nothing for a phase under 5 s
    for _ in range(4):
        quiet.update()
    quiet.close()
    assert capsys.readouterr().out == ""
    assert Phase("off", 2, enabled=False, every=0.0, quiet_below=0.0).close() is None
    assert capsys.readouterr().out == ""
    assert clock(3725) == "1:02:05" and clock(65) == "01:05"


def test_the_teacher_cache_and_evaluation_say_how_far_they_are(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.0)
    monkeypatch.setattr(progress, "QUIET_BELOW", 0.0)
    parts = build_run(tiny_run(tmp_path, "kd"))
    task = parts.task
    capsys.readouterr()
    TeacherCache.build(parts.teacher, task.train_set, task.collate, 8, parts.teacher.device)
    out = capsys.readouterr().out
    assert "[distil] caching teacher logits: 1/4 batches (25%)" in out and "done, 4 batches" in out
    task.evaluate(parts.student, 8)
    out = capsys.readouterr().out
    assert "[distil] evaluating on 16 rows: 1/2 batches (50%)" in out and "done, 2 batches" in out


def test_tokenising_says_how_far_it_is_in_process_0_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.0)
    monkeypatch.setattr(progress, "QUIET_BELOW", 0.0)
    capsys.readouterr()
    build_run(tiny_run(tmp_path, "kd"))
    assert "[distil] tokenising 32 rows: done, 32 rows" in capsys.readouterr().out
    monkeypatch.setenv("RANK", "1")
    build_run(tiny_run(tmp_path, "kd"))
    assert "tokenising" not in capsys.readouterr().out
