"""End to end on tiny models: finetune, KD, LWD and TED on tiny SQuAD files; KD, LWD and TED as causal LM."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering

from distil.cli.main import main
from distil.config import build_run_config
from distil.losses import kd_kl
from distil.losses.divergences import DIVERGENCES, divergence
from distil.plans import run, stage_dir
from distil.training.setup import build_run
from helpers import corpus_run, first_rows_features
from qa_lm_helpers import CORPUS, SQUAD_V2, lm_run, qa_run


def _recipe(run_dir):
    return json.loads((Path(run_dir) / "student" / "recipe.json").read_text())


def _log_keys(run_dir):
    lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
    return {k for line in lines for k in json.loads(line)}


def test_squad_finetune_then_kd_on_squad_v2(tmp_path):
    ft = qa_run(
        tmp_path, "finetune", **{"models.student": {"init": "pretrained", "path": str(tmp_path / "qa-bert")}}
    )
    ft.models.teacher = None
    result = run(ft, progress=False)
    recipe = _recipe(ft.run_dir)
    assert set(result.metrics) == {"exact_match", "f1"} and recipe["results"]["selection_metric"] == "f1"
    assert recipe["built"]["held_out_titles"] == ["Films"] and recipe["built"]["dev_features"] > 4
    teacher = AutoModelForQuestionAnswering.from_pretrained(result.student_dir)
    assert type(teacher).__name__ == "BertForQuestionAnswering"
    v2 = {"data.task": "squad_v2", "data.dev_file": str(SQUAD_V2), "models.teacher": str(result.student_dir)}
    kd = qa_run(tmp_path, "kd", **v2, **{"train.max_steps": 3})
    result = run(kd, progress=False)
    assert {"has_answer_f1", "no_answer_exact_match", "exact_match", "f1"} <= set(result.metrics)
    assert {"loss/kd", "loss/task", "eval/f1"} <= _log_keys(kd.run_dir) and result.steps == 3


def test_squad_ted_full_plan(tmp_path):
    cfg = qa_run(tmp_path, "ted", **{"train.max_steps": 2, "method.layer_map": "uniform"})
    run(cfg, progress=False)
    root = Path(cfg.run_dir)
    recipe = _recipe(root)
    names = ["teacher-finetune", "student-finetune", "teacher-filters", "student-filters", "distill"]
    assert list(recipe["stages"]) == names and set(recipe["results"]["dev"]) == {"exact_match", "f1"}
    heads = load_file(str(stage_dir(root, "student-filters") / "student" / "method.safetensors"))
    assert heads["heads.layer_1.out.weight"].shape == (2, 32)  # Linear(d_f -> 2): start/end per token
    assert {"loss/filter_1"} <= _log_keys(stage_dir(root, "student-filters"))
    assert {"loss/kl", "loss/filter_mse", "loss/task"} <= _log_keys(stage_dir(root, "distill"))
    AutoModelForQuestionAnswering.from_pretrained(root / "student")


def test_squad_ted_on_deberta_v2(tmp_path):
    quick = {"train.max_steps": 2, "plan.finetune_teacher": False, "plan.finetune_student": False}
    quick |= {"models.attn_implementation": "eager", "method.layer_map": "uniform"}
    cfg = qa_run(tmp_path, "ted", family="deberta-v2", **quick)
    run(cfg, progress=False)
    assert list(_recipe(cfg.run_dir)["stages"]) == ["teacher-filters", "student-filters", "distill"]


def test_squad_through_the_cli(tmp_path, capsys):
    cfg = qa_run(tmp_path, "kd", **{"train.max_steps": 2})
    path = tmp_path / "squad-kd.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["distill", "--config", str(path), "--no-progress", "--run-dir", str(tmp_path / "cli")]) == 0
    assert _recipe(tmp_path / "cli")["config"]["data"]["split_dev"] == 0.25
    assert main(["validate", str(path), "--check-data"]) == 0
    assert "held_out_titles" in capsys.readouterr().out


def test_lm_kd_and_ted(tmp_path):
    kd = lm_run(tmp_path, "kd", **{"train.max_steps": 3, "train.eval_every": 1})
    result = run(kd, progress=False)
    recipe = _recipe(kd.run_dir)
    assert recipe["results"]["selection_metric"] == "neg_perplexity"
    assert recipe["results"]["best_metric"] == max(
        json.loads(x)["eval/neg_perplexity"]
        for x in (Path(kd.run_dir) / "log.jsonl").read_text().splitlines()
        if "eval/neg_perplexity" in x
    )
    assert result.metrics["perplexity"] == -result.metrics["neg_perplexity"] > 1
    assert {"loss/kd", "loss/task"} <= _log_keys(kd.run_dir)
    AutoModelForCausalLM.from_pretrained(result.student_dir)
    ted = lm_run(
        tmp_path, "ted", **{"train.max_steps": 2, "method.layer_map": [2], "plan.finetune_teacher": False}
    )
    run(ted, progress=False)
    root = Path(ted.run_dir)
    assert list(_recipe(root)["stages"]) == [
        "student-finetune",
        "teacher-filters",
        "student-filters",
        "distill",
    ]
    for side, layer in (("teacher-filters", 2), ("student-filters", 1)):
        saved = load_file(str(stage_dir(root, side) / "student" / "method.safetensors"))
        assert saved[f"heads.layer_{layer}.out.weight"].shape == (128, 32)  # an LM head per filter
    assert {"loss/kl", "loss/filter_mse", "loss/task"} <= _log_keys(stage_dir(root, "distill"))


def test_lm_ted_on_a_llama_style_decoder(tmp_path):
    quick = {"train.max_steps": 2, "method.layer_map": [2], "plan.finetune_teacher": False}
    cfg = lm_run(tmp_path, "ted", family="llama", **quick, **{"plan.finetune_student": False})
    result = run(cfg, progress=False)
    assert list(_recipe(cfg.run_dir)["stages"]) == ["teacher-filters", "student-filters", "distill"]
    assert result.metrics["eval_tokens"] > 0


@pytest.mark.parametrize("name", ["squad/finetune", "squad/kd", "squad/lwd", "squad/ted", "lm/kd", "lm/ted"])
def test_bundled_qa_and_lm_configs_validate(name):
    assert main(["validate", name, "--no-models"]) == 0


@pytest.mark.parametrize("task", ["squad", "lm"])
def test_lwd_on_qa_and_causal_lm(tmp_path, task):
    make = qa_run if task == "squad" else lm_run
    cfg = make(tmp_path, "lwd", **{"train.max_steps": 2, "method.layer_map": [2]})
    parts = build_run(cfg)
    batch, student, teacher = first_rows_features(parts, 4)
    out = parts.method.loss(batch, student, teacher)
    # QA: every start/end row counts; LM: only positions with a next token (TED Stage II's KL).
    mask = None if task == "squad" else batch.labels != -100
    if mask is not None:
        assert not mask.all()
    assert torch.allclose(out.parts["kl"], kd_kl(student.logits, teacher.logits, 2.0, mask))
    result = run(cfg, progress=False)
    assert result.steps == 2 and {"loss/kl", "loss/hidden_mse", "loss/task"} <= _log_keys(cfg.run_dir)
    auto = AutoModelForQuestionAnswering if task == "squad" else AutoModelForCausalLM
    auto.from_pretrained(result.student_dir)


_LM_METHODS = {
    "kd": {},
    "lwd": {"method.layer_map": [2]},
    "ted": {"method.layer_map": [2], "plan.finetune_teacher": False, "plan.finetune_student": False},
}
_CORPUS_METHODS = {
    "minilmv2": {"relation_heads": 2},  # K/V are 16 wide (2 KV heads)
    "minilm": {},
    "distilbert": {},
    "tinybert-hidden": {"name": "tinybert", "attention_weight": 0.0},  # hidden and embedding losses alone
}


# Every decoder family beyond the two the other tests train (GPT-2, Llama): each added as one record and one
# tiny config.
NEW_DECODERS = ["mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2"]


@pytest.mark.parametrize("family", NEW_DECODERS)
def test_a_new_decoder_family_runs_every_method_that_applies(tmp_path, family, capsys):
    """LM methods and task-agnostic methods train end to end; the students reload as causal LMs and
    `distil eval` scores their perplexity; TinyBERT's score loss runs on the scores the attention computed."""
    for name, overrides in _LM_METHODS.items():
        cfg = lm_run(tmp_path / name, name, family=family, **{"train.max_steps": 2}, **overrides)
        student = run(cfg, progress=False).student_dir
        AutoModelForCausalLM.from_pretrained(student)
    capsys.readouterr()
    assert main(["eval", str(student), "--task", "lm", "--file", str(CORPUS / "plain.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out
    teacher = next((tmp_path / "kd").glob(f"lm-{family}"))
    student_spec = {"init": "layers", "layers": [2]}
    for name, method in _CORPUS_METHODS.items():
        raw = corpus_run(tmp_path, teacher, student_spec, {"name": name, **method}, name, max_steps=2)
        assert run(build_run_config(raw), progress=False).steps == 2
    # TinyBERT's score loss reads the scores the attention computed, after the rotary embedding.
    raw = corpus_run(tmp_path, teacher, student_spec, {"name": "tinybert"}, "tinybert-scores", max_steps=2)
    assert run(build_run_config(raw), progress=False).steps == 2


@pytest.mark.parametrize("kind", [d for d in DIVERGENCES if d != "forward_kl"])
def test_token_level_kd_with_each_divergence(tmp_path, kind):
    """``method.divergence`` swaps KD's soft term on next-token distributions; the run trains end to end."""
    cfg = lm_run(tmp_path, "kd", **{"train.max_steps": 2, "method.divergence": kind, "method.beta": 0.3})
    parts = build_run(cfg)
    batch, student, teacher = first_rows_features(parts, 4)
    out = parts.method.loss(batch, student, teacher)
    expected = divergence(
        student.logits, teacher.logits, kind, temperature=2.0, mask=batch.labels != -100, beta=0.3, alpha=0.1
    )
    torch.testing.assert_close(out.parts["kd"], expected)
    assert run(cfg, progress=False).steps == 2
