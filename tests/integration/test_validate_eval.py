"""`distil validate` rejects what training rejects; `distil eval` scores each task kind as training does."""

import json
from pathlib import Path

import pytest
import yaml

from distil.cli.main import main
from distil.plans import run
from distil.tasks import GlueData, GlueTask
from factories import save_tiny_pair, tiny_tokenizer
from helpers import tiny_run
from qa_lm_helpers import CORPUS, SQUAD_V1, lm_run, qa_run

DATA = Path(__file__).parents[1] / "assets" / "data"


def _raw(tmp_path: Path, method: str = "kd", **overrides) -> dict:
    """A valid tiny labelled run as a raw mapping, with overrides (``None`` deletes a key)."""
    data = tiny_run(tmp_path, "kd").to_dict()
    data["method"] = {"name": method}
    data.pop("plan")
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def _corpus(tmp_path: Path) -> dict:
    return {"task": "corpus", "corpus": [str(CORPUS)], "max_length": 16}


# Each config builds as YAML but cannot train; before, several passed `distil validate` and failed later.
INVALID = {
    "homodistil selects the best checkpoint": (
        lambda t: _raw(t, "homodistil", **{"models.student": {"init": "copy"}}),
        "eval.select=last",
    ),
    "homodistil t_f beyond max_steps": (
        lambda t: _raw(t, "homodistil", **{"method.t_f": 50, "train.max_steps": 10, "eval.select": "last"}),
        "never reach",
    ),
    "homodistil masks sharded by FSDP": (
        lambda t: _raw(
            t, "homodistil", **{"eval.select": "last", "engine.name": "fsdp", "method.pruning": "masks"}
        ),
        "method.pruning=slicing",
    ),
    "fp16 with FSDP": (
        lambda t: _raw(t, **{"train.precision": "fp16-mixed", "engine.name": "fsdp"}),
        "fp16",
    ),
    "DeepSpeed": (lambda t: _raw(t, **{"engine.name": "deepspeed"}), "not available"),
    "CPU offload without FSDP": (lambda t: _raw(t, **{"engine.cpu_offload": True}), "cpu_offload"),
    "an engine key of an old config": (lambda t: _raw(t, **{"train.parallel": "fsdp"}), "engine.name"),
    "TED filter stage selects the best checkpoint": (lambda t: _raw(t, "ted_filters"), "eval.select=last"),
    "teacher cache on SQuAD": (
        lambda t: qa_run(t, "kd").to_dict() | {"train": {"cache_teacher": True}},
        "per-token outputs",
    ),
    "KD on an unlabelled corpus": (lambda t: _raw(t, "kd", data=_corpus(t)), "needs a labelled task"),
    "LWD on an unlabelled corpus": (lambda t: _raw(t, "lwd", data=_corpus(t)), "needs a labelled task"),
    "teacher cache with LWD": (lambda t: _raw(t, "lwd", **{"train.cache_teacher": True}), "hidden states"),
    "teacher cache with fine-tuning": (
        lambda t: _raw(t, "finetune", **{"train.cache_teacher": True}),
        "uses no teacher",
    ),
    "prediction stage on a corpus": (
        lambda t: _raw(t, "tinybert_prediction", data=_corpus(t)),
        "labelled task",
    ),
    "TED plan around another method": (lambda t: _raw(t, "kd", plan={"name": "ted"}), "runs method 'ted'"),
    "probe plan without teacher_layer auto": (
        lambda t: _raw(t, "minilmv2", data=_corpus(t), plan={"name": "layer_probe"}),
        "set it to auto",
    ),
    "teacher_layer auto without the probe": (
        lambda t: _raw(
            t, "minilmv2", data=_corpus(t), plan={"name": "single"}, **{"method.teacher_layer": "auto"}
        ),
        "plan.name=layer_probe",
    ),
    "selection metric the task lacks": (lambda t: _raw(t, **{"eval.metric": "spearmanr"}), "not a metric"),
    "head stage on a labelled task": (
        lambda t: _raw(
            t, "homodistil", plan={"name": "homodistil", "head_steps": 3}, **{"eval.select": "last"}
        ),
        "head_steps",
    ),
    "tinybert task plan on a corpus": (
        lambda t: _raw(t, "tinybert", data=_corpus(t), plan={"name": "tinybert"}),
        "plan.name=single",
    ),
    "DistilBERT-style with no term on a labelled task": (
        lambda t: _raw(t, "distilbert", **{"method.alpha_ce": 0.0, "method.alpha_cos": 0.0}),
        "MLM term is off",
    ),
    "head fitting on a labelled task": (lambda t: _raw(t, "homodistil_head"), "on a corpus"),
    "corpus option on a GLUE task": (
        lambda t: _raw(t, data={"task": "sst2", "corpus": ["x"]}),
        "Unknown config key 'data.corpus'",
    ),
    "SQuAD option on a custom task": (lambda t: _raw(t, **{"data.doc_stride": 64}), "data.doc_stride"),
    "TED plan with nothing to run": (
        lambda t: _raw(
            t,
            "ted",
            plan={
                "name": "ted",
                "stop_after": "finetune",
                "finetune_teacher": False,
                "finetune_student": False,
            },
        ),
        "nothing to run",
    ),
    # Checks that read the checkpoints' config.json and tokenizer (validate builds on the meta device).
    "missing teacher folder": (
        lambda t: _raw(t, **{"models.teacher": str(t / "no-such-teacher")}),
        "no such directory",
    ),
    "paper layer map of a depth it does not halve": (
        lambda t: _raw(t, **{"models.student": {"init": "layers", "num_layers": 2, "layer_map": "paper"}}),
        "halves the depth",
    ),
    "student layer beyond the teacher's depth": (
        lambda t: _raw(t, **{"models.student": {"init": "layers", "layers": [7]}}),
        "layers",
    ),
    "teacher head with another label count": (
        lambda t: _raw(t, **{"data.label_names": ["0", "1", "2"]}),
        "classifier with 2 labels",
    ),
    "maximum length beyond the teacher's positions": (
        lambda t: _raw(t, **{"data.max_length": 100000}),
        "max_length",
    ),
    "student heads that do not divide its width": (
        lambda t: _raw(
            t,
            **{"models.student": {"init": "config", "num_layers": 1, "hidden_size": 30, "num_heads": 4}},
        ),
        "hidden",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validate_rejects_what_training_rejects(tmp_path, capsys, case):
    make, message = INVALID[case]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make(tmp_path)))
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distil validate: error:") and message in err
    code = main(["distill", "--config", str(path), "--no-progress", "--run-dir", str(tmp_path / "run")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _metrics(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (pair.split("=") for pair in out.strip().splitlines()[-1].split())}


def _dev(run_dir: str) -> dict[str, float]:
    return json.loads((Path(run_dir) / "student" / "recipe.json").read_text())["results"]["dev"]


def test_eval_scores_squad_as_training_does(tmp_path, capsys):
    # Train and dev on the same file, the last student kept: eval must repeat training's last evaluation.
    same = {"data.split_dev": None, "data.train_file": str(SQUAD_V1), "eval.select": "last"}
    cfg = qa_run(tmp_path, "finetune", **same, **{"train.max_steps": 2, "models.teacher": None})
    cfg.models.student.init, cfg.models.student.path = "pretrained", str(tmp_path / "qa-bert")
    run(cfg, progress=False)
    capsys.readouterr()
    args = ["eval", f"{cfg.run_dir}/student", "--task", "squad", "--file", str(SQUAD_V1)]
    assert main([*args, "--max-length", "48", "--doc-stride", "16"]) == 0
    got = _metrics(capsys.readouterr().out)
    assert set(got) == {"exact_match", "f1"}
    assert got == pytest.approx({k: v for k, v in _dev(cfg.run_dir).items()}, abs=1e-4)


def test_eval_scores_causal_lm_perplexity_as_training_does(tmp_path, capsys):
    cfg = lm_run(tmp_path, "kd", **{"train.max_steps": 2, "eval.select": "last"})
    run(cfg, progress=False)
    capsys.readouterr()
    args = ["eval", f"{cfg.run_dir}/student", "--task", "lm", "--file", str(CORPUS / "plain.txt")]
    assert main([*args, "--max-length", "16", "--eval-stride", "8", "--attn-implementation", "eager"]) == 0
    got = _metrics(capsys.readouterr().out)
    dev = _dev(cfg.run_dir)
    assert got["perplexity"] == pytest.approx(dev["perplexity"], rel=1e-4)
    assert got["eval_tokens"] == dev["eval_tokens"]


def test_mnli_is_scored_on_both_dev_sets(tmp_path, capsys):
    task = GlueTask(GlueData(task="mnli", data_dir=str(DATA), max_length=32), 0)
    assert list(task.dev_sets) == ["dev", "mm"]
    teacher = save_tiny_pair(tmp_path / "mnli-teacher", "bert", num_labels=3)
    task.prepare(tiny_tokenizer(), 32)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    metrics = task.evaluate(model, batch_size=4)
    assert set(metrics) == {"accuracy", "accuracy_mm"}
    cfg = tiny_run(tmp_path, "finetune", data={"task": "mnli", "data_dir": str(DATA), "max_length": 32})
    cfg.models.student.init, cfg.models.student.path = "pretrained", str(teacher)
    cfg.train.max_steps = 2
    result = run(cfg, progress=False)
    assert set(result.metrics) == {"accuracy", "accuracy_mm"}
    assert main(["eval", str(result.student_dir), "--task", "mnli", "--data-dir", str(DATA)]) == 0
    assert set(_metrics(capsys.readouterr().out.splitlines()[-1])) == {"accuracy", "accuracy_mm"}


def test_eval_refuses_a_checkpoint_without_the_tasks_head(tmp_path, capsys):
    """A masked-LM folder scored on a classification file would score a fresh, random head."""
    from transformers import AutoModelForMaskedLM

    from factories import tiny_config

    mlm = tmp_path / "mlm"
    AutoModelForMaskedLM.from_config(tiny_config("bert")).save_pretrained(mlm)
    tiny_tokenizer().save_pretrained(mlm)
    rows = tmp_path / "dev.tsv"
    rows.write_text("".join(f"a line {i}\t{i % 2}\n" for i in range(8)))
    capsys.readouterr()
    argv = ["eval", str(mlm), "--task", "custom", "--file", str(rows), "--no-header", "--text-columns", "0"]
    assert main([*argv, "--label-column", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masked-LM checkpoint (BertForMaskedLM)" in err[0]
    assert "sequence-classification head" in err[0] and "Traceback" not in err[0]


def test_eval_reports_rows_per_class_scores_and_a_confusion_matrix(tmp_path, capsys):
    cfg = tiny_run(tmp_path, "finetune", **{"models.teacher": None, "train.max_steps": 2})
    cfg.models.student.init, cfg.models.student.path = "pretrained", str(tmp_path / "teacher")
    result = run(cfg, progress=False)
    dev = str(tmp_path / "dev.jsonl")
    base = ["eval", str(result.student_dir), "--task", "custom", "--file", dev, "--text-columns", "text"]
    capsys.readouterr()
    assert main([*base, "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["rows"] == {"dev": 16} and "[distil] scored 16 rows of dev" in out
    assert set(report["classes"]) == {"0", "1"}
    assert sum(c["support"] for c in report["classes"].values()) == 16
    confusion = report["confusion"]
    assert sum(map(sum, confusion)) == 16
    correct = sum(confusion[i][i] for i in range(2))
    assert report["metrics"]["accuracy"] == pytest.approx(correct / 16)
    assert _metrics(out) == pytest.approx(report["metrics"], abs=1e-4) and "| class | precision |" in out
    assert main([*base, "--subset", "5"]) == 0
    assert "[distil] scored 5 rows of dev" in capsys.readouterr().out
