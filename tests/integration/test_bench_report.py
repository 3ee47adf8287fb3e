"""``distil bench``, ``distil report`` and ``distil export`` on tiny models, runs and data (in-process)."""

import json
from pathlib import Path

import matplotlib.image
import pytest

from distil.bench import DevSplit, run_bench
from distil.cli.main import main
from distil.reporting.plots import DPI, FIGSIZE, pareto
from distil.tasks import CustomData, CustomTask
from distil.training.loop import train
from factories import save_tiny_pair
from helpers import tiny_run, write_tiny_task

BATCH_SIZES = (1, 4)
SEQ = 16
PNG_SHAPE = (int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer teacher, a 1-layer student exported to ONNX (fp32 + int8), and a tiny dev file."""
    root = tmp_path_factory.mktemp("bench")
    teacher = save_tiny_pair(root / "teacher", "bert")
    student = save_tiny_pair(root / "student", "bert", num_hidden_layers=1)
    assert main(["export", str(student), "--int8"]) == 0
    dev = write_tiny_task(root / "dev.jsonl", 12, seed=1)
    return {"root": root, "teacher": teacher, "student": student, "dev": dev}


@pytest.fixture(scope="module")
def bench_json(pair) -> Path:
    out = pair["root"] / "out" / "bench.json"
    args = ["bench", "--teacher", str(pair["teacher"]), "--student", str(pair["student"])]
    args += ["--task", "custom", "--file", str(pair["dev"]), "--text-columns", "text", "--threads", "1"]
    args += ["--seq-length", str(SEQ), "--batch-sizes", "1,4", "--repeats", "2", "--warmup", "1"]
    assert main([*args, "--json", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    cfg = tiny_run(tmp_path_factory.mktemp("run"), "kd", **{"train.max_steps": 6, "train.eval_every": 2})
    train(cfg, progress=False)
    return Path(cfg.run_dir)


def test_bench_returns_every_field(pair, bench_json):
    result = json.loads(bench_json.read_text())
    rows = {(r["model"], r["runtime"]): r for r in result["rows"]}
    assert set(rows) == {
        ("teacher", "pytorch-fp32"),
        ("student", "pytorch-fp32"),
        ("student", "onnx-fp32"),
        ("student", "onnx-int8"),
    }
    for row in rows.values():
        assert row["parameters"] > 0 and row["flops_per_token"] > 0 and row["size_mb"] > 0
        for bs in map(str, BATCH_SIZES):
            t = row["latency_ms"][bs]
            assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["repeats"] == 2
            assert row["throughput_seq_per_s"][bs] == pytest.approx(int(bs) * 1000 / t["median_ms"])
            assert row["speedup"][bs] > 0
        assert set(row["metrics"]) == {"accuracy", "f1"} and 0 <= row["metrics"]["accuracy"] <= 1
    assert rows[("teacher", "pytorch-fp32")]["speedup"]["1"] == 1.0
    # Distillation and runtime kept apart: the student's ONNX rows against its own PyTorch row; the
    # teacher has no ONNX export here, so no same-runtime ratio for them, and a note says how to get one.
    for key in (("student", "onnx-fp32"), ("student", "onnx-int8")):
        assert "distillation_speedup" not in rows[key] and rows[key]["runtime_speedup"]["1"] > 0
        own = rows[("student", "pytorch-fp32")]["latency_ms"]["1"]["median_ms"]
        assert rows[key]["runtime_speedup"]["1"] == pytest.approx(
            own / rows[key]["latency_ms"]["1"]["median_ms"]
        )
    same = rows[("student", "pytorch-fp32")]
    assert same["distillation_speedup"] == same["speedup"] and same["runtime_speedup"]["1"] == 1.0
    assert any("the teacher has no onnx-int8 export" in n for n in result["notes"])
    assert rows[("student", "onnx-fp32")]["metrics"] == rows[("student", "pytorch-fp32")]["metrics"]
    assert rows[("student", "pytorch-fp32")]["parameters"] < rows[("teacher", "pytorch-fp32")]["parameters"]
    settings = result["settings"]
    assert settings["main_metric"] == "accuracy" and settings["dev_examples"] == 12
    assert settings["batch_sizes"] == list(BATCH_SIZES) and settings["threads"] == 1


def test_bench_with_spinning_onnx_threads_times_in_blocks(pair):
    result = run_bench(
        {"teacher": pair["teacher"], "student": pair["student"]},
        seq_length=SEQ,
        batch_sizes=(2,),
        repeats=2,
        warmup=1,
        threads=1,
        onnx_spin=True,
    )
    assert result["settings"]["onnx_spin"] and result["settings"]["timing"].startswith("blocks")
    assert {r["runtime"] for r in result["rows"]} == {"pytorch-fp32", "onnx-fp32", "onnx-int8"}
    assert all(r["latency_ms"]["2"]["repeats"] == 2 for r in result["rows"])


def test_flops_follow_the_documented_formula(pair):
    """Encoder FLOPs/token: L(8d^2 + 4df + 4nd) plus pooler 2d^2/n and classifier 2dC/n (docs/deploy.md)."""
    data = CustomData(train_file=str(pair["dev"]), dev_file=str(pair["dev"]), text_columns=["text"])
    dev = DevSplit(CustomTask(data, 0, eval_only=True), max_length=32)
    result = run_bench(
        {"teacher": pair["teacher"]},
        seq_length=SEQ,
        batch_sizes=(2,),
        repeats=1,
        warmup=0,
        threads=1,
        dev=dev,
    )
    (row,) = result["rows"]
    d, f, n, layers, classes = 32, 64, SEQ, 2, 2
    expected = layers * (8 * d * d + 4 * d * f + 4 * n * d) + (2 * d * d + 2 * d * classes) // n
    assert row["flops_per_token"] == expected


def test_pareto_front():
    points = [(10.0, 0.9), (5.0, 0.8), (7.0, 0.7), (20.0, 0.95), (12.0, 0.85)]
    assert pareto(points) == [(5.0, 0.8), (10.0, 0.9), (20.0, 0.95)]


def _assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == PNG_SHAPE and image.std() > 0


def test_report_writes_markdown_and_every_png(run_dir, bench_json, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--bench", str(bench_json)]) == 0
    text = (out / "report.md").read_text()
    pngs = ["loss_run-kd.png", "dev_metric.png", "accuracy_vs_latency.png", "accuracy_vs_size.png"]
    for png in pngs:
        assert f"]({png})" in text
        _assert_png(out / png)
    assert "Skipped" not in text
    assert "## Benchmark: bench.json" in text and "onnx-int8" in text
    assert "| run-kd | kd | 6 |" in text


def test_report_without_latency_skips_that_plot(run_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert not (out / "accuracy_vs_latency.png").exists()
    assert "Skipped: no latency measurements" in text
    _assert_png(out / "accuracy_vs_size.png")
    _assert_png(out / "dev_metric.png")


def test_cli_errors_exit_2(tmp_path, capsys, pair):
    missing = str(tmp_path / "missing")
    assert main(["export", missing]) == 2
    assert main(["bench", "--teacher", missing, "--student", str(pair["student"]), "--threads", "1"]) == 2
    assert main(["bench", "--teacher", str(pair["teacher"]), "--student", missing, "--threads", "1"]) == 2
    assert main(["report", missing, "--out", str(tmp_path / "r")]) == 2
    assert main(["export", str(pair["student"])]) == 2  # an export exists already
    err = capsys.readouterr().err
    assert "distil export: error:" in err and "--overwrite" in err and "distil report: error:" in err
    bad = ["bench", "--teacher", str(pair["teacher"]), "--student", str(pair["student"])]
    assert main([*bad, "--batch-sizes", "0,x"]) == 2
    assert main([*bad, "--seq-length", "65", "--threads", "1"]) == 2  # the tiny models have 64 positions
    assert "longer than the teacher's 64 positions" in capsys.readouterr().err


def test_report_covers_staged_and_task_agnostic_runs(tmp_path):
    from distil.plans import run

    staged = tiny_run(
        tmp_path, "tinybert", **{"train.max_steps": 2, "data.dev_file": None, "eval.select": "last"}
    )
    run(staged, progress=False)
    from distil.config import build_run_config
    from helpers import corpus_run

    agnostic = build_run_config(
        corpus_run(
            tmp_path,
            tmp_path / "teacher",
            {"init": "layers", "layers": [2]},
            {"name": "minilmv2", "relation_heads": 4},
            name="agnostic",
            max_steps=2,
        )
    )
    run(agnostic, progress=False)
    out = tmp_path / "report"
    assert main(["report", staged.run_dir, agnostic.run_dir, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for stage in ("intermediate", "prediction"):  # one loss figure per stage of the TinyBERT plan
        assert f"## Training losses: run-tinybert/{stage}" in text
        _assert_png(out / f"loss_run-tinybert_{stage}.png")
    assert "| agnostic | minilmv2 | 2 | - (finished, no evaluation) |" in text
    assert "(unfinished)" not in text
