"""A 2-process CPU run (torchrun + gloo) reaches the same student as 1 process at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from helpers import tiny_run

pytestmark = pytest.mark.multiprocess


def _config(tmp_path: Path, name: str, batch_size: int) -> Path:
    cfg = tiny_run(
        tmp_path,
        "kd",
        **{
            "run_dir": str(tmp_path / name),
            "data.dev_file": None,
            "train.batch_size": batch_size,
            "train.epochs": 2,
        },
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_two_processes_equal_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    one = _config(tmp_path, "one", batch_size=8)
    two = _config(tmp_path, "two", batch_size=4)
    cmd = [sys.executable, "-m", "distil", "distill", "--config"]
    subprocess.run([*cmd, str(one), "--no-progress"], check=True, env=env, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(
        [*torchrun, "-m", "distil", "distill", "--config", str(two), "--no-progress"],
        check=True,
        env=env,
        timeout=300,
    )
    recipe = json.loads((tmp_path / "two" / "student" / "recipe.json").read_text())
    # Some launchers silently start one process: make sure two really trained together.
    assert recipe["results"]["world_size"] == 2
    assert (
        recipe["results"]["steps"]
        == json.loads((tmp_path / "one" / "student" / "recipe.json").read_text())["results"]["steps"]
        == 8
    )
    a = AutoModelForSequenceClassification.from_pretrained(tmp_path / "one" / "student").state_dict()
    b = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two" / "student").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def test_minilmv2_two_processes_with_unused_student_parameters(tmp_path):
    # The relation loss leaves the student's last FFN without gradient: two processes must still run.
    from factories import save_tiny_pair

    teacher = save_tiny_pair(tmp_path / "teacher", "bert", num_labels=2)
    corpus = Path(__file__).resolve().parents[1] / "assets" / "corpus"
    cfg = {
        "run_dir": str(tmp_path / "mp"),
        "models": {
            "teacher": str(teacher),
            "student": {"init": "config", "num_layers": 1, "hidden_size": 16},
        },
        "data": {
            "task": "corpus",
            "corpus": [str(corpus)],
            "max_length": 16,
            "cache_dir": str(tmp_path / "c"),
        },
        "train": {"batch_size": 2, "max_steps": 3, "tensorboard": False},
        "method": {"name": "minilmv2", "relation_heads": 4},
    }
    path = tmp_path / "mp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(
        [*torchrun, "-m", "distil", "distill", "--config", str(path), "--no-progress"],
        check=True,
        env=env,
        timeout=300,
    )
    recipe = json.loads((tmp_path / "mp" / "student" / "recipe.json").read_text())
    assert recipe["results"]["world_size"] == 2 and recipe["results"]["steps"] == 3
