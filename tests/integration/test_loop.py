"""Invariants of the shared loop: accumulation, padding, frozen teacher, caching, resume, bad input."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from distil.errors import ConfigError, DataError, TrainingError
from distil.methods.kd import KD
from distil.training.loop import train
from factories import save_tiny_pair
from helpers import tiny_run, train_interrupted


def _weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    model = AutoModelForSequenceClassification.from_pretrained(Path(run_dir) / "student")
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def test_batch_8_equals_batch_2_times_accumulation_4(tmp_path):
    # No evaluation, so the exported student is the final one.
    a = tiny_run(tmp_path, run_dir=str(tmp_path / "a"), **{"data.dev_file": None})
    b = tiny_run(
        tmp_path,
        run_dir=str(tmp_path / "b"),
        **{"data.dev_file": None, "train.batch_size": 2, "train.grad_accum": 4},
    )
    train(a, progress=False)
    train(b, progress=False)
    _assert_close(_weights(a.run_dir), _weights(b.run_dir), atol=2e-6)


def test_teacher_gets_no_gradients_and_stays_in_eval(tmp_path, monkeypatch):
    cfg = tiny_run(tmp_path, **{"data.dev_file": None, "train.max_steps": 2})
    captured, seen = {}, []
    original_init, original_loss = KD.__init__, KD.loss

    def init(self, method_cfg, ctx):
        captured["teacher"] = ctx.teacher
        captured["before"] = {k: v.clone() for k, v in ctx.teacher.state_dict().items()}
        original_init(self, method_cfg, ctx)

    def loss(self, batch, student, teacher):
        seen.append((teacher.logits.requires_grad, captured["teacher"].training))
        return original_loss(self, batch, student, teacher)

    monkeypatch.setattr(KD, "__init__", init)
    monkeypatch.setattr(KD, "loss", loss)
    train(cfg, progress=False)
    teacher = captured["teacher"]
    assert len(seen) == 2 and seen == [(False, False)] * 2
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    _assert_close(captured["before"], teacher.state_dict(), atol=0)


def test_padding_does_not_change_per_example_losses(tmp_path):
    from distil.adapters import forward_features
    from distil.training.setup import build_run

    cfg = tiny_run(tmp_path)
    parts = build_run(cfg)
    parts.student.eval()
    rows = [parts.task.train_set[i] for i in range(6)]
    request = parts.method.student_request()

    def loss(batch_rows):
        batch = parts.task.collate(batch_rows)
        with torch.no_grad():
            s = forward_features(parts.student, batch, request)
            t = forward_features(parts.teacher, batch, parts.method.teacher_request())
            return parts.method.loss(batch, s, t)

    alone = torch.stack([loss([r]).total for r in rows])
    together = loss(rows)
    assert max(len(r["input_ids"]) for r in rows) > min(len(r["input_ids"]) for r in rows)
    torch.testing.assert_close(together.total, alone.mean(), atol=1e-6, rtol=1e-5)


def test_teacher_cache_gives_the_same_student(tmp_path):
    a = tiny_run(tmp_path, run_dir=str(tmp_path / "a"), **{"data.dev_file": None})
    b = tiny_run(
        tmp_path, run_dir=str(tmp_path / "b"), **{"data.dev_file": None, "train.cache_teacher": True}
    )
    train(a, progress=False)
    train(b, progress=False)
    _assert_close(_weights(a.run_dir), _weights(b.run_dir), atol=1e-5)


def test_cache_teacher_rejected_for_finetune(tmp_path):
    with pytest.raises(ConfigError, match="cache_teacher"):
        train(tiny_run(tmp_path, "finetune", **{"train.cache_teacher": True}), progress=False)


def test_kill_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    # Dropout on, so the restored RNG state matters too.
    teacher = save_tiny_pair(tmp_path / "teacher-dropout", "bert", num_labels=2, hidden_dropout_prob=0.2)
    common = {
        "data.dev_file": None,
        "train.checkpoint_every": 2,
        "train.epochs": 3,
        "models.teacher": str(teacher),
    }
    full = tiny_run(tmp_path, run_dir=str(tmp_path / "full"), **common)
    train(full, progress=False)

    broken = tiny_run(tmp_path, run_dir=str(tmp_path / "resumed"), **common)
    train_interrupted(broken, KD, 6, monkeypatch)
    assert (Path(broken.run_dir) / "checkpoints" / "step-00000004").is_dir()
    with pytest.raises(ConfigError, match="unfinished run"):
        train(broken, progress=False)
    train(broken, resume=True, progress=False)
    _assert_close(_weights(full.run_dir), _weights(broken.run_dir), atol=1e-6)


def test_finished_run_is_not_overwritten_silently(tmp_path):
    cfg = tiny_run(tmp_path, **{"train.max_steps": 1})
    train(cfg, progress=False)
    recipe = Path(cfg.run_dir) / "student" / "recipe.json"
    stamp = recipe.read_text()
    with pytest.raises(ConfigError, match="finished run.*--overwrite"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, resume=True, progress=False)
    assert recipe.read_text() == stamp
    train(cfg, overwrite=True, progress=False)
    assert json.loads(recipe.read_text())["results"]["steps"] == 1


def test_bad_input_writes_nothing(tmp_path):
    cfg = tiny_run(tmp_path, **{"data.train_file": str(tmp_path / "missing.jsonl")})
    with pytest.raises(DataError, match="missing.jsonl"):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


def test_non_finite_loss_stops_with_step_terms_and_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_run(tmp_path, **{"data.dev_file": None, "train.checkpoint_every": 1})
    calls = {"n": 0}
    original = KD.loss

    def nan_at_step_3(self, batch, student, teacher):
        calls["n"] += 1
        out = original(self, batch, student, teacher)
        if calls["n"] == 3:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(KD, "loss", nan_at_step_3)
    with pytest.raises(TrainingError, match=r"step 3.*'total': nan.*step-00000002"):
        train(cfg, progress=False)


def test_evaluation_selects_and_exports_best(tmp_path):
    cfg = tiny_run(tmp_path, "finetune", **{"train.eval_every": 2, "train.epochs": 2})
    result = train(cfg, progress=False)
    recipe = json.loads((Path(cfg.run_dir) / "student" / "recipe.json").read_text())
    lines = [json.loads(x) for x in (Path(cfg.run_dir) / "log.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/accuracy" in x]
    assert [x["step"] for x in evals] == [2, 4, 6, 8]
    best = max(evals, key=lambda x: x["eval/accuracy"])
    assert recipe["results"]["best_metric"] == pytest.approx(best["eval/accuracy"])
    assert result.metrics["accuracy"] == pytest.approx(best["eval/accuracy"])
    assert all("loss/task" in x and "samples_per_s" in x for x in lines if "loss/total" in x)
    model = AutoModelForSequenceClassification.from_pretrained(Path(cfg.run_dir) / "student")
    assert model.config.num_hidden_layers == 1


def test_stage_runner_runs_reuses_and_exports_the_last_stage(tmp_path, capsys):
    from distil.plans import Plan, Step, run_plan, stage_dir

    root = tiny_run(tmp_path, "kd", run_dir=str(tmp_path / "staged"))
    first = tiny_run(
        tmp_path, "finetune", **{"train.max_steps": 2, "run_dir": str(stage_dir(root.run_dir, "a"))}
    )
    second = tiny_run(
        tmp_path,
        "kd",
        **{
            "train.max_steps": 3,
            "models.student.layers": [1],
            "models.teacher": str(stage_dir(root.run_dir, "a") / "student"),
            "run_dir": str(stage_dir(root.run_dir, "b")),
        },
    )

    def run_stages(root, steps, **kw):
        return run_plan(Plan(Path(root.run_dir), [Step(n, c) for n, c in steps], root), **kw)

    result = run_stages(root, [("a", first), ("b", second)], resume=False, overwrite=False, progress=False)
    recipe = json.loads((Path(root.run_dir) / "student" / "recipe.json").read_text())
    assert result.student_dir == Path(root.run_dir) / "student"
    assert set(recipe["stages"]) == {"a", "b"} and recipe["stages"]["b"]["steps"] == 3
    assert recipe["method"] == "kd"
    with pytest.raises(ConfigError, match="finished run"):
        run_stages(root, [("a", first), ("b", second)], resume=False, overwrite=False, progress=False)
    # An interrupted plan resumes: drop stage b's result and run again with resume.
    import shutil

    shutil.rmtree(Path(root.run_dir) / "student")
    shutil.rmtree(stage_dir(root.run_dir, "b"))
    capsys.readouterr()
    run_stages(root, [("a", first), ("b", second)], resume=True, overwrite=False, progress=False)
    assert "stage a: reusing" in capsys.readouterr().out


def test_a_checkpoint_of_an_older_format_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    cfg = tiny_run(tmp_path, **{"data.dev_file": None, "train.checkpoint_every": 2})
    train_interrupted(cfg, KD, 4, monkeypatch)
    manifest_file = Path(cfg.run_dir) / "checkpoints" / "step-00000002" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["format"] = 1  # as an older distil wrote it
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"older distil \(checkpoint format 1.*--overwrite"):
        train(cfg, resume=True, progress=False)


def test_progress_off_a_terminal_is_lines_not_bar_frames(tmp_path, capsys):
    """Output redirected to a file (pytest's capture is no terminal) gets progress lines, no bar frames."""
    cfg = tiny_run(tmp_path, "kd", **{"train.max_steps": 3, "train.progress_seconds": 1e-6})
    train(cfg, progress=True)
    captured = capsys.readouterr()
    assert "kd custom" not in captured.err and "step/s" not in captured.err  # the loop's bar: off
    assert "[distil] step 1/3" in captured.out


def test_threads_option_sets_torch_threads_for_the_run(tmp_path, monkeypatch):
    import yaml

    from distil.cli.main import main

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    cfg = tiny_run(tmp_path, "kd", **{"train.max_steps": 1})
    path = tmp_path / "run.yaml"
    data = cfg.to_dict()
    data.pop("plan")
    path.write_text(yaml.safe_dump(data))
    assert main(["distill", "--config", str(path), "--threads", "1", "--no-progress"]) == 0
    assert calls and calls[0] == 1
    assert yaml.safe_load((Path(cfg.run_dir) / "config.yaml").read_text())["train"]["threads"] == 1
    with pytest.raises(ConfigError, match="train.threads must be >= 1"):
        tiny_run(tmp_path, "kd", **{"train.threads": 0})
