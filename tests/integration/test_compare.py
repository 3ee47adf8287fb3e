"""`distil compare` on tiny models: the grid, its sharing, its intervals, and a killed compare resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distil.cli.main import main
from distil.compare import build_setup, run_compare
from distil.compare import grid as grid_module
from distil.errors import ConfigError
from distil.methods.kd import KD
from factories import save_tiny_pair
from helpers import write_tiny_task


def _raw(tmp: Path, **compare: Any) -> dict[str, Any]:
    teacher = tmp / "teacher"
    if not teacher.exists():
        save_tiny_pair(teacher, "bert", num_labels=2)
        write_tiny_task(tmp / "train.jsonl", 48, seed=0)
        write_tiny_task(tmp / "test.jsonl", 40, seed=1)
    section = {
        "seeds": [1, 2],
        "teacher": {"finetune": False},
        "students": {"1-layer": {"init": "layers", "layers": [2]}},
        "methods": {"finetune": {"name": "finetune"}, "kd": {"name": "kd"}, "ted": {"name": "ted"}},
        "latency": {"seq_length": 16, "batch_sizes": [1, 4], "repeats": 2, "onnx": False},
        "resamples": 200,
        **compare,
    }
    return {
        "run_dir": str(tmp / "cmp"),
        "models": {"teacher": str(teacher)},
        "data": {
            "task": "custom", "train_file": str(tmp / "train.jsonl"), "dev_file": str(tmp / "test.jsonl"),
            "text_columns": ["text"], "label_column": "label", "label_names": ["0", "1"], "max_length": 16,
            "split_dev": 8,
        },
        "train": {"batch_size": 8, "epochs": 2, "lr": 1e-3, "warmup_ratio": 0.0, "report_to": []},
        "compare": section,
    }  # fmt: skip


def test_a_grid_runs_shares_the_teacher_filters_and_reports_intervals(tmp_path, capsys):
    setup = build_setup(_raw(tmp_path, latency={"seq_length": 16, "batch_sizes": [1, 4], "repeats": 2}))
    assert [c.key for c in setup.cells] == [
        f"1-layer/{m}/seed{s}" for s in (1, 2) for m in ("finetune", "kd", "ted")
    ]
    assert setup.split == "test"  # the dev file is kept apart from model selection (split_dev carves dev)
    out = run_compare(setup, max_latency_ms=1e6)
    root = tmp_path / "cmp"
    # TED starts from the finetune row's student and learns the teacher's filters once, with seed 1.
    ted1, ted2 = (root / "runs" / "1-layer" / "ted" / f"seed{s}" / "stages" for s in (1, 2))
    assert sorted(p.name for p in ted1.iterdir()) == ["distill", "student-filters", "teacher-filters"]
    assert sorted(p.name for p in ted2.iterdir()) == ["distill", "student-filters"]
    recipe = json.loads((root / "runs/1-layer/ted/seed2/student/recipe.json").read_text())
    assert recipe["config"]["method"]["teacher_filters"].endswith(
        "ted/seed1/stages/teacher-filters/student/method.safetensors"
    )
    assert recipe["config"]["models"]["student"]["path"].endswith("finetune/seed2/student")
    rows = out["summary"]["rows"]
    assert [(r["student"], r["method"]) for r in rows] == [
        ("teacher", "teacher"), ("1-layer", "finetune"), ("1-layer", "kd"), ("1-layer", "ted")
    ]  # fmt: skip
    assert out["summary"]["test_items"] == 40
    for r in rows:
        m = r["metric"]
        assert m["low"] <= m["value"] <= m["high"]
        assert set(r["latency_ms"]) == {"pytorch-fp32", "onnx-fp32"}
        assert set(r["latency_ms"]["onnx-fp32"]) == {"1", "4"}
        assert r["parameters"] > 0
    assert rows[1]["vs_baseline"] is None and rows[2]["vs_baseline"]["p_value"] is not None
    assert len(rows[2]["per_seed"]) == 2
    assert any("two seeds" in w for w in out["summary"]["warnings"])
    assert out["recommendation"].startswith("Recommendation under pytorch-fp32 latency at batch 1 <= ")
    printed = capsys.readouterr().out
    assert "| 1-layer | kd |" in printed and out["recommendation"] in printed
    assert (root / "compare.png").stat().st_size > 0 and (root / "compare.md").is_file()
    scores = json.loads((root / "scores" / "1-layer" / "kd" / "seed1.json").read_text())
    assert len(scores["preds"]) == len(scores["refs"]) == 40
    assert not list(root.glob("runs/**/checkpoints"))  # finished runs are reused, never resumed


def test_a_killed_compare_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    raw = _raw(tmp_path, methods={"finetune": {"name": "finetune"}, "kd": {"name": "kd"}})
    raw["train"]["checkpoint_every"] = 2
    calls = {"n": 0}
    original = KD.loss

    def crash(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 16:  # seed 2's KD run, in its second epoch (6 steps per epoch)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(KD, "loss", crash)
    with pytest.raises(KeyboardInterrupt):
        run_compare(build_setup(raw))
    monkeypatch.setattr(KD, "loss", original)
    root = tmp_path / "cmp" / "runs" / "1-layer"
    finished = {p: p.stat().st_mtime_ns for p in root.glob("*/seed*/student/recipe.json")}
    assert len(finished) == 3 and not (root / "kd" / "seed2" / "student").exists()
    assert [p.parent.name for p in root.glob("*/*/checkpoints")] == ["seed2"]  # the interrupted run's
    statuses: dict[str, str] = {}
    real = grid_module.run_one

    def spy(cfg: Any, *, progress: bool) -> str:
        statuses[Path(cfg.run_dir).relative_to(root).as_posix()] = status = real(cfg, progress=progress)
        return status

    monkeypatch.setattr(grid_module, "run_one", spy)
    out = run_compare(build_setup(raw))
    assert statuses == {
        "finetune/seed1": "reused", "kd/seed1": "reused", "finetune/seed2": "reused", "kd/seed2": "resumed"
    }  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was written again
    assert len(out["summary"]["rows"]) == 3


def test_a_changed_setting_is_not_silently_mixed_with_finished_runs(tmp_path):
    raw = _raw(tmp_path, seeds=[1], methods={"finetune": {"name": "finetune"}})
    run_compare(build_setup(raw))
    raw["train"]["lr"] = 5e-4
    with pytest.raises(ConfigError, match="train.lr"):
        run_compare(build_setup(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compare": None}, "needs a `compare:` section"),
        ({"method": {"name": "kd"}}, "no top-level `method:`"),
        ({"compare.seeds": [1, 1]}, "distinct seeds"),
        ({"compare.methods": {"kd": {"temperature": 2.0}}}, "needs `name`"),
        ({"compare.methods": {"a b": {"name": "kd"}}}, "not a usable name"),
        ({"compare.baseline": "lwd"}, "not a row of compare.methods"),
        ({"compare.sizes": {}}, "Unknown config key 'compare.sizes'"),
        ({"compare.methods": {"kd": {"name": "kd", "alpah": 0.5}}}, "compare cell 1-layer/kd/seed1"),
        ({"models": {}}, "models.teacher is required"),
    ],
)
def test_bad_compare_configs_fail_before_anything_is_written(tmp_path, change, message):
    raw = _raw(tmp_path)
    for key, value in change.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    with pytest.raises(ConfigError, match=message):
        build_setup(raw)
    assert not (tmp_path / "cmp").exists()


def test_without_a_test_split_every_run_keeps_its_final_weights(tmp_path):
    raw = _raw(tmp_path)
    del raw["data"]["split_dev"]
    setup = build_setup(raw)
    assert setup.split == "dev"
    assert {c.config.eval.select for c in setup.cells} == {"last"}


def test_the_command_refuses_bad_flags_in_one_line(tmp_path, capsys):
    assert main(["compare", "--config", "custom/compare", "--min-keep", "98"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-keep" in err[0]
    assert main(["compare", "--config", "custom/compare", "--jobs", "0"]) == 2


def test_a_row_without_a_layer_map_follows_each_shape_and_a_misfit_fails_before_any_run(tmp_path):
    raw = _raw(tmp_path, methods={"lwd": {"name": "lwd"}, "kd": {"name": "kd"}})
    raw["compare"]["students"] = {
        "uniform": {"init": "layers", "num_layers": 1, "layer_map": "uniform"},
        "paper": {"init": "layers", "num_layers": 1, "layer_map": "paper"},
    }
    setup = build_setup(raw)
    maps = {(c.student, c.row): getattr(c.config.method, "layer_map", None) for c in setup.cells}
    assert maps[("uniform", "lwd")] == "uniform" and maps[("paper", "lwd")] == "paper"
    assert maps[("uniform", "kd")] is None  # kd has no layer map
    # The tiny teacher has 2 layers: the paper map (halving) fits a 1-layer student, not a 2-layer one.
    raw["compare"]["students"]["paper"]["num_layers"] = 2
    with pytest.raises(ConfigError, match="compare cell paper/lwd/seed1: The paper layer map halves"):
        run_compare(build_setup(raw))
    assert not (tmp_path / "cmp").exists()  # refused before anything was written


def test_extractive_qa_is_scored_per_question_and_timed_in_both_runtimes(tmp_path):
    from qa_lm_helpers import SQUAD_V1, save_tiny_qa

    teacher = save_tiny_qa(tmp_path / "qa")
    raw = {
        "run_dir": str(tmp_path / "cmp"),
        "models": {"teacher": str(teacher)},
        "data": {"task": "squad", "dev_file": str(SQUAD_V1), "split_dev": 0.25, "max_length": 48,
                 "doc_stride": 16},
        "train": {"batch_size": 4, "epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "report_to": []},
        "compare": {
            "seeds": [1], "teacher": {"finetune": False},
            "students": {"1-layer": {"init": "layers", "layers": [2]}},
            "methods": {"finetune": {"name": "finetune"}, "kd": {"name": "kd"}},
            "latency": {"seq_length": 16, "batch_sizes": [1], "repeats": 2}, "resamples": 200,
        },
    }  # fmt: skip
    setup = build_setup(raw)
    assert setup.split == "dev" and {c.config.eval.select for c in setup.cells} == {"last"}
    out = run_compare(setup)
    summary = out["summary"]
    assert summary["metric"] == "f1" and summary["scale"] == 1.0 and summary["chance"] is None
    scores = json.loads((tmp_path / "cmp" / "scores" / "1-layer" / "kd" / "seed1.json").read_text())
    assert scores["metric"] == "mean" and len(scores["preds"]) == summary["test_items"]
    assert all(0.0 <= v <= 100.0 for v in scores["preds"])
    assert {tuple(r["latency_ms"]) for r in summary["rows"]} == {("pytorch-fp32", "onnx-fp32")}
    assert any(w.startswith("one seed") for w in summary["warnings"])


def test_validate_reads_a_compare_config_and_checks_its_models(tmp_path, capsys):
    import yaml

    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path)))
    assert main(["validate", str(path)]) == 0
    assert "valid compare config; 6 runs (1 student shape(s) x 3 method row(s) x 2 seed(s))" in (
        capsys.readouterr().out
    )
    assert main(["validate", str(path), "compare.students.1-layer.layers=[5]"]) == 2
    assert "compare cell 1-layer/finetune/seed1" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_runs_spread_over_worker_processes_give_the_same_students(tmp_path):
    raw = _raw(tmp_path, seeds=[1], methods={"finetune": {"name": "finetune"}, "kd": {"name": "kd"}})
    raw["train"]["threads"] = 1  # the same thread count in both ways, so the sums run in the same order
    run_compare(build_setup(raw), jobs=2)
    parallel = json.loads((tmp_path / "cmp" / "compare.json").read_text())["summary"]["rows"]
    raw["run_dir"] = str(tmp_path / "one-by-one")
    run_compare(build_setup(raw), jobs=1)
    sequential = json.loads((tmp_path / "one-by-one" / "compare.json").read_text())["summary"]["rows"]
    assert [r["per_seed"] for r in parallel] == [r["per_seed"] for r in sequential]
    for name in ("finetune", "kd"):
        a, b = (
            json.loads((tmp_path / d / "scores" / "1-layer" / name / "seed1.json").read_text())["preds"]
            for d in ("cmp", "one-by-one")
        )
        assert a == b
