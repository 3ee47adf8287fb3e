"""Bad input through the CLI: exit status 2, one `distil ...: error:` line naming the field or file, no
traceback, and the run directory (or its absence) byte-identical before and after."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from distil.cli.main import main
from distil.methods.kd import KD
from factories import save_tiny_pair
from helpers import tiny_run, train_interrupted

Case = Callable[[Path, pytest.MonkeyPatch], tuple[list[str], str, Path]]


def _config(tmp: Path, method: str = "kd", **overrides: Any) -> Path:
    """A tiny run's YAML with dotted overrides applied to the raw mapping (``None`` deletes a key); the
    result is not validated here, so invalid values reach the CLI."""
    data = tiny_run(tmp, method, **{"train.max_steps": 2}).to_dict()
    data.pop("plan")
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _distill(tmp: Path, **overrides: Any) -> list[str]:
    return ["distill", "--config", str(_config(tmp, **overrides)), "--no-progress"]


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")
    }


def _no_tokenizer(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    teacher = save_tiny_pair(tmp / "bare", "bert", num_labels=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (teacher / name).unlink(missing_ok=True)
    return _distill(tmp, **{"models.teacher": str(teacher)}), "tokenizer", tmp / "run-kd"


def _long_max_length(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    return _distill(tmp, **{"data.max_length": 100}), "data.max_length", tmp / "run-kd"  # positions: 64


def _non_utf8_data(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    bad = tmp / "latin1.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9 good", "label": 1}\n' * 8)
    return _distill(tmp, **{"data.train_file": str(bad)}), "latin1.jsonl", tmp / "run-kd"


def _non_utf8_config(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    path = _config(tmp)
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    return ["distill", "--config", str(path)], "run.yaml", tmp / "run-kd"


def _truncated_weights(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    teacher = save_tiny_pair(tmp / "cut", "bert", num_labels=2)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return _distill(tmp, **{"models.teacher": str(teacher)}), "model.safetensors", tmp / "run-kd"


def _below_a_file(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    (tmp / "notes.txt").write_text("a file, not a folder")
    run_dir = tmp / "notes.txt" / "run"
    return _distill(tmp, **{"run_dir": str(run_dir)}), "notes.txt", tmp / "notes.txt"


def _read_only(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    # Tests may run as root, for whom permissions do not apply: the probe's write is made to fail.
    import distil.files

    def refuse(folder: Path) -> None:
        raise PermissionError(13, "Permission denied", str(folder / ".distil-write-probe"))

    monkeypatch.setattr(distil.files, "_write_probe", refuse)
    return _distill(tmp), "not writable", tmp / "run-kd"


def _full_disk(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    import distil.files

    monkeypatch.setattr(distil.files, "_free_bytes", lambda folder: 1024)
    return _distill(tmp), "no space left", tmp / "run-kd"


def _unknown_metric(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    return _distill(tmp, **{"eval.metric": "bleu"}), "eval.metric", tmp / "run-kd"


def _fp16_on_cpu(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    return _distill(tmp, **{"train.precision": "fp16-mixed"}), "train.precision=fp16-mixed", tmp / "run-kd"


def _kd_on_a_corpus(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    corpus = Path(__file__).resolve().parents[1] / "assets" / "corpus"
    data = {"task": "corpus", "corpus": [str(corpus)], "max_length": 16, "cache_dir": str(tmp / "c")}
    return _distill(tmp, **{"data": data}), "labelled task", tmp / "run-kd"


def _ragged_csv(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    rows = tmp / "ragged.csv"
    rows.write_text("text,label\ngood film,1\nbad film,0\na film, with a comma,1\nfine,1\n")
    overrides = {"data.train_file": str(rows), "data.dev_file": None}
    return _distill(tmp, **overrides), "ragged.csv", tmp / "run-kd"


def _unknown_method(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    return (
        ["distill", "--method", "kdd", "--config", str(_config(tmp))],
        "Unknown method 'kdd'",
        tmp / "run-kd",
    )


def _changed_resume(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    cfg = tiny_run(tmp, **{"data.dev_file": None, "train.checkpoint_every": 2})
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(cfg, KD, 4, patch)
    changed = tiny_run(tmp, **{"data.dev_file": None, "train.checkpoint_every": 2, "train.lr": 5e-4})
    path = tmp / "changed.yaml"
    path.write_text(yaml.safe_dump(changed.to_dict()))
    return ["distill", "--config", str(path), "--resume"], "train.lr", Path(cfg.run_dir)


def _resume_missing_run_dir(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    missing = tmp / "runs" / "typo-kd"
    argv = ["distill", "--config", str(_config(tmp)), "--run-dir", str(missing), "--resume", "--no-progress"]
    return argv, "does not exist: nothing to resume", missing


def _resume_missing_plan_dir(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    path = _config(tmp, method="ted", **{"plan": {"name": "ted", "allow_chance_filters": True}})
    missing = tmp / "runs" / "typo-ted"
    argv = ["distill", "--config", str(path), "--run-dir", str(missing), "--resume", "--no-progress"]
    return argv, "does not exist: nothing to resume", missing


def _damaged_resumes(content: bytes) -> Case:
    def case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
        cfg = tiny_run(tmp, **{"data.dev_file": None, "train.checkpoint_every": 2})
        with pytest.MonkeyPatch.context() as patch:
            train_interrupted(cfg, KD, 4, patch)
        (Path(cfg.run_dir) / "resumes.json").write_bytes(content)
        path = tmp / "same.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        argv = ["distill", "--config", str(path), "--resume", "--no-progress"]
        return argv, "resumes.json", Path(cfg.run_dir)

    return case


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader executed what a model folder held."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _pickled_teacher(tmp: Path, _: pytest.MonkeyPatch) -> tuple[list[str], str, Path]:
    import pickle

    teacher = save_tiny_pair(tmp / "pickled", "bert", num_labels=2)
    for weights in teacher.glob("*.safetensors"):
        weights.unlink()
    (teacher / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(tmp / "ran")}))
    return _distill(tmp, **{"models.teacher": str(teacher)}), "pickled objects", tmp / "run-kd"


CASES: dict[str, Case] = {
    "model folder without tokenizer files": _no_tokenizer,
    "data.max_length above the position table": _long_max_length,
    "non-UTF-8 data file": _non_utf8_data,
    "non-UTF-8 config file": _non_utf8_config,
    "truncated weights file": _truncated_weights,
    "run directory below a regular file": _below_a_file,
    "read-only run directory": _read_only,
    "full disk": _full_disk,
    "eval.metric the task does not have": _unknown_metric,
    "fp16 without a GPU": _fp16_on_cpu,
    "KD on an unlabelled corpus": _kd_on_a_corpus,
    "ragged CSV row": _ragged_csv,
    "unknown --method": _unknown_method,
    "--resume with a changed learning rate": _changed_resume,
    "--resume of a run directory that does not exist": _resume_missing_run_dir,
    "--resume of a plan whose directory does not exist": _resume_missing_plan_dir,
    "--resume with a damaged resumes.json": _damaged_resumes(b'[{"from_step": 2'),
    "--resume with a non-UTF-8 resumes.json": _damaged_resumes(b"\xff\xfe[]"),
    "teacher weights holding pickled objects": _pickled_teacher,
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clean_line_and_writes_nothing(tmp_path, capsys, monkeypatch, case):
    argv, names, run_dir = CASES[case](tmp_path, monkeypatch)
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert first.startswith(f"distil {argv[0]}: error: "), err
    assert names in first, first
    assert "Traceback" not in err
    assert _snapshot(run_dir) == before
    assert not (tmp_path / "ran").exists()  # nothing a folder held was executed


def test_options_may_come_between_overrides(tmp_path):
    path = _config(tmp_path)
    argv = ["distill", "--config", str(path), "train.lr=1e-4", "--no-progress", "train.max_steps=1"]
    assert main(argv) == 0
    recipe = json.loads((tmp_path / "run-kd" / "student" / "recipe.json").read_text())
    assert recipe["config"]["train"]["lr"] == 1e-4 and recipe["results"]["steps"] == 1
    assert main(["distill", "--config", str(path), "train.max_steps=1", "--overwrite", "--no-progress"]) == 0


def test_unknown_options_are_still_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--config", str(_config(tmp_path)), "train.lr=1e-4", "--frobnicate"])
    assert exit_info.value.code == 2 and "--frobnicate" in capsys.readouterr().err


def test_a_decoder_without_a_pad_token_pads_with_its_end_of_sequence_token(tmp_path, capsys):
    from transformers import AutoTokenizer

    teacher = save_tiny_pair(tmp_path / "gpt2", "gpt2", num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    tokenizer.eos_token = "[SEP]"
    tokenizer.pad_token = None  # as GPT-2 and Llama checkpoints ship
    shutil.rmtree(teacher / "tokenizer.json", ignore_errors=True)
    tokenizer.save_pretrained(teacher)
    assert AutoTokenizer.from_pretrained(teacher).pad_token is None
    path = _config(
        tmp_path, "finetune", **{"models.student.init": "pretrained", "models.student.path": str(teacher)}
    )
    assert main(["finetune", "--config", str(path), "--no-progress", "models.teacher=null"]) == 0
    assert "pad" in capsys.readouterr().out.lower()
    recipe = json.loads((tmp_path / "run-finetune" / "student" / "recipe.json").read_text())
    assert recipe["built"]["pad_token"] == "[SEP]"


def test_only_the_bad_option_is_named_among_overrides(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        config = str(_config(tmp_path))
        main(["validate", config, "--method", "finetune", "data.max_length=16", "train.lr=1e-4"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and err.endswith("unrecognized arguments: --method finetune"), err


def test_under_a_launcher_only_process_0_prints_the_error(tmp_path, capsys, monkeypatch):
    argv = ["distill", "--method", "kdd", "--config", str(_config(tmp_path))]
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == 2 and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 2 and "Unknown method 'kdd'" in capsys.readouterr().err


def test_under_a_launcher_only_process_0_prints_the_summary(tmp_path, capsys, monkeypatch):
    import distil.plans
    from distil.training.loop import RunResult

    done = RunResult(tmp_path, tmp_path / "student", {"accuracy": 0.5}, 2, 2, 1.0)
    monkeypatch.setattr(distil.plans, "run", lambda cfg, **_: done)
    argv = ["distill", "--config", str(_config(tmp_path)), "--no-progress"]
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == 0 and "student saved to" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 0 and "student saved to" in capsys.readouterr().out
