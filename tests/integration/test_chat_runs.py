"""Chat data end to end on a tiny Llama: token-level methods on assistant tokens, on-policy and
sequence-level distillation (GKD), exact resume, and `distil eval` on conversations."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distil.cli.main import main
from distil.errors import ConfigError
from distil.losses.divergences import divergence
from distil.methods.gkd import GKD
from distil.plans import run
from distil.training.loop import train
from distil.training.setup import build_run
from distil.types import Runtime
from helpers import first_rows_features, train_interrupted
from qa_lm_helpers import CHAT, TINY_TEMPLATE, chat_run, save_tiny_lm

STEPS = {"train.max_steps": 4}


@pytest.mark.parametrize("method", ["finetune", "kd", "lwd", "gkd"])
def test_methods_train_on_chat_data_and_the_student_keeps_the_template(tmp_path, method, capsys):
    extra = {"method.lmbda": 1.0, "method.max_new_tokens": 4} if method == "gkd" else {}
    if method == "finetune":
        extra = {"models.student": {"init": "layers", "layers": [2]}}
    student = run(chat_run(tmp_path, method, **STEPS, **extra), progress=False).student_dir
    AutoModelForCausalLM.from_pretrained(student)
    assert AutoTokenizer.from_pretrained(student).chat_template == TINY_TEMPLATE
    capsys.readouterr()
    assert main(["eval", str(student), "--task", "chat", "--file", str(CHAT / "chat-test.jsonl")]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_token_level_kd_on_chat_data_reads_a_top_k_teacher_cache(tmp_path, capsys):
    cfg = chat_run(
        tmp_path, "kd", **STEPS, **{"train.cache_teacher_topk": 4, "data.cache_dir": str(tmp_path)}
    )
    assert run(cfg, progress=False).steps == 4
    assert "teacher top-k cache: wrote" in capsys.readouterr().out
    assert len(list((tmp_path / "teacher-topk").glob("*/meta.json"))) == 1


def test_the_task_scores_assistant_tokens_only(tmp_path):
    parts = build_run(chat_run(tmp_path, "kd"))
    batch = parts.task.collate([parts.task.train_set[i] for i in range(4)])
    tok = parts.tokenizer
    for ids, labels, n in zip(batch.input_ids, batch.labels, batch.prompt_lengths, strict=True):
        assert labels[n - 1] == ids[n] and labels[n - 2] == -100  # the last turn's first token is scored
        assert tok.decode(ids[:n]).split()[-2:] == ["assistant", ":"]
        words = tok.decode(labels[labels != -100]).split()
        assert "user" not in words and "system" not in words
    assert (batch.labels[batch.attention_mask == 0] == -100).all()


def test_gkd_off_policy_is_the_divergence_on_the_data(tmp_path):
    cfg = chat_run(tmp_path, "gkd", **{"method.lmbda": 0.0, "method.beta": 0.3})
    parts = build_run(cfg)
    parts.method.attach(Runtime(seed=3, call_student=lambda fn: fn()))
    batch, s, t = first_rows_features(parts, 4)
    assert parts.method.prepare_batch(batch) is batch
    expected = divergence(s.logits, t.logits, "jsd", temperature=1.0, mask=batch.labels != -100, beta=0.3)
    torch.testing.assert_close(parts.method.loss(batch, s, t).parts["divergence"], expected)


@pytest.mark.parametrize("source", ["student", "teacher"])
def test_gkd_completes_the_last_turn_with_the_student_or_the_teacher(tmp_path, source):
    overrides = {"method.lmbda": 1.0} if source == "student" else {"method.lmbda": 0.0, "method.seq_kd": True}
    parts = build_run(chat_run(tmp_path, "gkd", **overrides, **{"method.max_new_tokens": 5}))
    parts.method.attach(Runtime(seed=3, call_student=lambda fn: fn()))
    batch = parts.task.collate([parts.task.train_set[i] for i in range(4)])
    out = parts.method.prepare_batch(batch)
    assert parts.method.last["on_policy"] == float(source == "student")
    model = parts.student if source == "student" else parts.teacher
    for i, n in enumerate(batch.prompt_lengths.tolist()):
        assert out.input_ids[i, :n].tolist() == batch.input_ids[i, :n].tolist()  # the prompt is kept
        scored = out.labels[i][out.labels[i] != -100]
        assert 1 <= len(scored) <= 5 and out.labels[i, n - 1] == out.input_ids[i, n]
        # The completion is what the model samples itself from the prompt with the same seed.
        greedy_free = out.input_ids[i, n : n + len(scored)].tolist()
        assert scored.tolist() == greedy_free
    assert model is not None


def test_gkd_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The coin and every completion come from seeds of (train.seed, step, row): a killed run resumes
    to the uninterrupted run's student exactly."""
    settings = {
        "train.max_steps": 6,
        "train.checkpoint_every": 2,
        "method.lmbda": 0.5,
        "method.max_new_tokens": 4,
    }
    whole = chat_run(tmp_path / "whole", "gkd", **settings)
    train(whole, progress=False)
    killed = chat_run(tmp_path / "killed", "gkd", **settings)
    train_interrupted(killed, GKD, 4, monkeypatch)
    train(killed, resume=True, progress=False)
    logs = [
        [json.loads(line) for line in (tmp_path / name / "run-gkd" / "log.jsonl").read_text().splitlines()]
        for name in ("whole", "killed")
    ]
    on_policy = [r["loss/on_policy"] for r in logs[0] if "loss/on_policy" in r]
    assert 0 < sum(on_policy) < len(on_policy)  # both kinds of step happened
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "run-gkd" / "student").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "killed" / "run-gkd" / "student").state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_gkd_needs_chat_data_and_refuses_a_teacher_cache(tmp_path):
    from qa_lm_helpers import lm_run

    with pytest.raises(ConfigError, match="set data.task=chat"):
        lm_run(tmp_path, "gkd")
    with pytest.raises(ConfigError, match="cache_teacher"):
        chat_run(tmp_path, "gkd", **{"train.cache_teacher": True})
    with pytest.raises(ConfigError, match="cache_teacher_topk: method 'gkd' needs more"):
        chat_run(tmp_path, "gkd", **{"train.cache_teacher_topk": 8})


def test_init_model_writes_a_decoder_that_trains_and_refuses_what_it_cannot_write(tmp_path, capsys):
    out = tmp_path / "init"
    argv = [
        "init-model",
        str(out),
        "--family",
        "qwen3",
        "--layers",
        "2",
        "--hidden-size",
        "32",
        "--heads",
        "4",
    ]
    assert main([*argv, "--kv-heads", "2", "--tokenizer", str(save_tiny_lm(tmp_path / "t", "llama"))]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.num_key_value_heads) == (2, 2)
    assert AutoTokenizer.from_pretrained(out).eos_token == "[SEP]"  # WordPiece's [SEP] ends sequences
    assert main(argv) == 2 and "exists" in capsys.readouterr().err  # nothing overwritten
    assert main(["init-model", str(tmp_path / "b"), "--family", "bert"]) == 2
    assert "not a decoder family" in capsys.readouterr().err


def _generate(tmp_path, model, out, *extra):
    return main(
        ["generate", str(model), "--prompts", str(CHAT / "chat-test.jsonl"), "--out", str(out),
         "--chat-template", str(tmp_path / "tiny.jinja"), "--max-new-tokens", "5", "--temperature", "1.0",
         "--batch-size", "3", "--chunk", "8", *extra]
    )  # fmt: skip


def test_generate_writes_completions_that_resume_and_train(tmp_path, monkeypatch, capsys):
    import distil.cli.generate as gen

    cfg = chat_run(tmp_path, "kd")  # writes the teacher and the template
    teacher = cfg.models.teacher
    whole = tmp_path / "whole.jsonl"
    assert _generate(tmp_path, teacher, whole) == 0
    rows = [json.loads(line) for line in whole.read_text().splitlines()]
    assert len(rows) == 60 and all(r["completion"][0]["role"] == "assistant" for r in rows)
    settings = json.loads((tmp_path / "whole.settings.json").read_text())
    assert (settings["temperature"], settings["max_new_tokens"], settings["rows"]) == (1.0, 5, 60)
    assert _generate(tmp_path, teacher, whole) == 2 and "--overwrite" in capsys.readouterr().err
    # Killed in its third part: the two written parts are kept, and the rerun writes the same file.
    calls, original = {"n": 0}, gen.complete

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # 3 calls a part of 8 rows (batch 3)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, "complete", dying)
    killed = tmp_path / "killed.jsonl"
    assert _generate(tmp_path, teacher, killed) == 130 and "interrupted" in capsys.readouterr().err
    assert len(list((tmp_path / "killed.jsonl.parts").glob("0*.jsonl"))) == 2 and not killed.exists()
    monkeypatch.setattr(gen, "complete", original)
    assert _generate(tmp_path, teacher, killed) == 0
    assert killed.read_text() == whole.read_text()
    # Sequence-level KD: any method trains on the teacher's completions.
    result = run(chat_run(tmp_path / "seq", "kd", **STEPS, **{"data.train_file": str(whole)}), progress=False)
    assert result.steps == 4


@pytest.mark.parametrize(
    "family", ["mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "gpt2"]
)
def test_gkd_runs_on_every_decoder_family(tmp_path, family):
    """On-policy steps (the student generates with its KV cache) train and export on each family."""
    settings = {"train.max_steps": 2, "method.lmbda": 1.0, "method.max_new_tokens": 3, "data.max_length": 40}
    student = run(chat_run(tmp_path, "gkd", family=family, **settings), progress=False).student_dir
    assert AutoModelForCausalLM.from_pretrained(student).config.model_type == family


def test_eval_json_feeds_the_report_with_generations_side_by_side(tmp_path, capsys):
    student = run(chat_run(tmp_path, "kd", **STEPS), progress=False).student_dir
    teacher = chat_run(tmp_path, "kd").models.teacher
    report = tmp_path / "eval.json"
    argv = ["eval", str(student), "--task", "chat", "--file", str(CHAT / "chat-test.jsonl"), "--teacher"]
    assert main([*argv, str(teacher), "--max-new-tokens", "4", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert 0 <= saved["metrics"]["top1_agreement"] <= 1 and len(saved["generations"]) == 5
    assert main(["report", "--eval", str(report), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| prompt | teacher | student | reference |" in text and "top1_agreement" in text
    capsys.readouterr()
    if importlib.util.find_spec("lm_eval") is None:  # optional: without it, one line says how to get it
        assert main(["eval", str(student), "--lm-eval", "hellaswag"]) == 2
        assert "lm-evaluation-harness, which is not installed" in capsys.readouterr().err
    assert main(["eval", str(student)]) == 2
    assert (
        main(
            ["eval", str(student), "--task", "lm", "--file", str(CHAT / "chat-test.jsonl"), "--teacher", "x"]
        )
        == 2
    )
