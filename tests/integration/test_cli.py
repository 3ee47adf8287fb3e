"""The ``distil`` CLI end to end on tiny models and tiny data (in-process)."""

import json
import re
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForSequenceClassification

from distil.cli.configs import bundled_configs
from distil.cli.main import main
from distil.config import load_config
from helpers import tiny_run


def _write_config(tmp_path: Path, method: str, **overrides) -> Path:
    cfg = tiny_run(tmp_path, method, **overrides)
    data = cfg.to_dict()
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_finetune_then_distill_then_eval(tmp_path, capsys):
    ft = _write_config(tmp_path, "finetune", **{"train.max_steps": 3})
    assert main(["finetune", "--config", str(ft), "--no-progress", "--run-dir", str(tmp_path / "ft")]) == 0
    student = tmp_path / "ft" / "student"
    recipe = json.loads((student / "recipe.json").read_text())
    assert recipe["method"] == "finetune" and recipe["results"]["steps"] == 3
    assert recipe["config"]["train"]["max_steps"] == 3
    AutoModelForSequenceClassification.from_pretrained(student)

    kd = _write_config(tmp_path, "kd")
    code = main(
        [
            "distill",
            "--method",
            "kd",
            "--config",
            str(kd),
            "--no-progress",
            "--run-dir",
            str(tmp_path / "kd"),
            "train.max_steps=2",
            "method.temperature=3",
        ]
    )
    assert code == 0
    recipe = json.loads((tmp_path / "kd" / "student" / "recipe.json").read_text())
    assert recipe["config"]["method"] == {
        "name": "kd", "temperature": 3.0, "alpha": 0.5,
        "divergence": "forward_kl", "beta": 0.5, "skew_alpha": 0.1,
    }  # fmt: skip
    assert (tmp_path / "kd" / "log.jsonl").is_file()

    capsys.readouterr()
    code = main(
        [
            "eval",
            str(tmp_path / "kd" / "student"),
            "--task",
            "custom",
            "--file",
            str(tmp_path / "dev.jsonl"),
            "--text-columns",
            "text",
        ]
    )
    assert code == 0
    assert "accuracy=" in capsys.readouterr().out


def test_errors_exit_non_zero_with_a_clear_message(tmp_path, capsys):
    kd = _write_config(tmp_path, "kd")
    assert main(["distill", "--config", str(kd), "train.lrr=1"]) == 2
    assert "Did you mean 'lr'" in capsys.readouterr().err
    assert main(["distill", "--method", "finetune", "--config", str(kd)]) == 2
    assert "method.name is 'kd'" in capsys.readouterr().err
    assert main(["distill", "--method", "kdd", "--config", str(_write_config(tmp_path, "finetune"))]) == 2
    err = capsys.readouterr().err
    assert "Unknown method 'kdd'. Did you mean 'kd'?" in err  # before the conflict with the config
    assert main(["distill", "--config", str(kd), "data.task=sst3"]) == 2
    assert "sst2" in capsys.readouterr().err
    assert not (tmp_path / "run-kd").exists()


def test_ls_and_validate(tmp_path, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for word in ("kd", "finetune", "sst2", "stsb", "wnli", "pipeline/sst2"):
        assert word in out
    # Every engine of the registry, with the options of its section.
    assert "engine.find_unused_parameters" in out
    assert "engine.cpu_offload, engine.ram_efficient_loading" in out
    assert main(["validate", str(_write_config(tmp_path, "kd"))]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  name: kd\ndata:\n  taks: sst2\n")
    assert main(["validate", str(bad)]) == 2
    assert "Did you mean 'task'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(bundled_configs()))
def test_bundled_configs_validate(name, capsys):
    """Every bundled config is valid as a config (their teachers are trained by other configs first)."""
    assert main(["validate", name, "--no-models"]) == 0


def test_layer_map_out_of_range_is_rejected_before_writing(tmp_path, capsys):
    kd = _write_config(tmp_path, "kd")
    assert main(["distill", "--config", str(kd), "models.student.layers=[1,3]"]) == 2
    err = capsys.readouterr().err
    assert "models.student.layers" in err and "3" in err
    assert not (tmp_path / "run-kd").exists()


def test_student_with_another_vocabulary_is_rejected(tmp_path, capsys):
    from factories import tiny_model, tiny_tokenizer

    other = tmp_path / "other-student"
    tiny_model("bert", "seq", num_labels=2).save_pretrained(other)
    tok = tiny_tokenizer()
    tok.add_tokens(["zzzextra"])
    tok.save_pretrained(other)
    kd = _write_config(tmp_path, "kd")
    code = main(
        [
            "distill",
            "--config",
            str(kd),
            "models.student.init=pretrained",
            f"models.student.path={other}",
            "models.student.layers=null",
        ]
    )
    assert code == 2
    assert "vocabular" in capsys.readouterr().err.lower()
    assert not (tmp_path / "run-kd").exists()


def test_teacher_without_task_head_is_rejected(tmp_path, capsys):
    from factories import tiny_model, tiny_tokenizer

    base = tmp_path / "base-teacher"
    tiny_model("bert", "base").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    kd = _write_config(tmp_path, "kd")
    assert main(["distill", "--config", str(kd), f"models.teacher={base}"]) == 2
    assert "no trained 'seq' head" in capsys.readouterr().err


def test_augment_then_distil_on_the_augmented_file(tmp_path, capsys):
    data_dir = Path(__file__).parents[1] / "assets" / "data"
    tiny_run(tmp_path)  # saves the tiny teacher
    out = tmp_path / "sst2_aug.tsv"
    args = ["augment", "--task", "sst2", "--data-dir", str(data_dir), "--model", str(tmp_path / "teacher")]
    assert main([*args, "--copies", "3", "--p-mask", "0.3", "--out", str(out)]) == 0
    assert "Distil on it with data.train_file=" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    original = (data_dir / "glue" / "SST-2" / "train.tsv").read_text().splitlines()
    assert lines[0] == "sentence\tlabel" and len(lines) > len(original)
    assert main([*args, "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text().splitlines() == lines

    kd = _write_config(
        tmp_path,
        "kd",
        # A GLUE task's data section in place of the tiny custom one.
        data={"task": "sst2", "data_dir": str(data_dir), "train_file": str(out), "max_length": 32},
    )
    code = main(
        ["distill", "--config", str(kd), "--no-progress", "--run-dir", str(tmp_path / "kd"), "method.alpha=1"]
    )
    assert code == 0
    recipe = json.loads((tmp_path / "kd" / "student" / "recipe.json").read_text())
    assert recipe["results"]["steps"] == 2 * -(-(len(lines) - 1) // 8)  # 2 epochs over every augmented row


def test_validate_times_real_steps_and_estimates_each_stage_without_writing(tmp_path, capsys):
    path = _write_config(tmp_path, "kd")
    cfg = load_config(str(path))
    capsys.readouterr()
    assert main(["validate", str(path), "--time", "3"]) == 0
    out = capsys.readouterr().out
    line = re.search(r"  run: ~(\d+) s \((\d+) steps x ([\d.]+) s, median of 3; (\d+) evaluation", out)
    assert line, out
    assert int(line.group(2)) == 8  # 32 rows / batch 8 x 2 epochs
    assert float(line.group(3)) > 0 and int(line.group(4)) == 2  # evaluated at the end of each epoch
    assert not Path(cfg.run_dir).exists()  # nothing was written
    assert main(["validate", str(path), "--time", "--no-models"]) == 2
    assert "--time builds and times the models" in capsys.readouterr().err


def test_switching_a_bundled_configs_method_on_the_command_line(capsys):
    """custom/kd with method.name=lwd: kd's alpha and teacher cache are dropped with a note, not refused."""
    assert main(["validate", "custom/kd", "method.name=lwd", "--no-models"]) == 0
    captured = capsys.readouterr()
    assert "method lwd" in captured.out
    assert "note: method.alpha from custom/kd does not apply to method 'lwd'; dropped." in captured.err
    assert "note: train.cache_teacher from custom/kd" in captured.err
    assert main(["validate", "custom/kd", "method.name=lwd", "method.alpha=0.5", "--no-models"]) == 2
    assert "Unknown config key 'method.alpha'" in capsys.readouterr().err
