"""MiniLMv2 and MiniLM v1 as methods: loss wiring, every family, corpus pipeline, then fine-tuning."""

from pathlib import Path

import pytest
import torch

from distil.adapters import forward_features
from distil.cli.main import main
from distil.config import build_run_config
from distil.errors import ConfigError
from distil.losses import relation_kl
from distil.methods import MethodContext
from distil.methods.minilm import MiniLM, MiniLMConfig
from distil.methods.minilmv2 import MiniLMv2, MiniLMv2Config
from distil.models.families import family_of
from distil.plans import run
from distil.training.loop import train
from factories import FAMILIES, save_tiny_pair, tiny_model
from helpers import corpus_run, write_tiny_task


def _batch(vocab: int = 100) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _ctx(student, teacher):
    return MethodContext(student=student, teacher=teacher, is_regression=False, num_labels=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_qkv_reach_the_minilmv2_loss(family):
    teacher = tiny_model(family, "base").eval()
    student = tiny_model(family, "base", **{family_of(teacher).num_layers_key: 1})
    relation_heads = 2  # a grouped-query family's K/V are 16 wide (2 KV heads)
    method = MiniLMv2(MiniLMv2Config(relation_heads=relation_heads, teacher_layer=1), _ctx(student, teacher))
    batch = _batch()
    s = forward_features(student, batch, method.student_request())
    with torch.no_grad():
        t = forward_features(teacher, batch, method.teacher_request())
    out = method.loss(batch, s, t)
    assert set(out.parts) == {"rel_QQ", "rel_KK", "rel_VV", "relation_chunks"} and out.total > 0
    out.total.backward()
    grads = [p.grad for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads, f"{family}: no gradient reached the student"
    expected = relation_kl(
        s.qkv[0].query,
        s.qkv[0].query,
        t.qkv[0].query,
        t.qkv[0].query,
        batch["attention_mask"],
        relation_heads,
        causal=s.causal,
    )
    torch.testing.assert_close(out.parts["rel_QQ"], expected)


def test_relation_heads_must_divide_both_widths():
    teacher, student = (
        tiny_model("bert", "base"),
        tiny_model("bert", "base", hidden_size=48, num_attention_heads=4),
    )
    with pytest.raises(ConfigError, match="relation_heads=5 must divide"):
        MiniLMv2(MiniLMv2Config(relation_heads=5), _ctx(student, teacher))
    MiniLMv2(MiniLMv2Config(relation_heads=8), _ctx(student, teacher))  # 8 divides 32 and 48
    with pytest.raises(ConfigError, match="teacher_layer"):
        MiniLMv2(MiniLMv2Config(relation_heads=8, teacher_layer=3), _ctx(student, teacher))


def test_minilm_v1_needs_equal_heads_and_names_minilmv2():
    teacher = tiny_model("bert", "base")
    student = tiny_model("bert", "base", num_attention_heads=2)
    with pytest.raises(ConfigError, match="minilmv2"):
        MiniLM(MiniLMConfig(), _ctx(student, teacher))
    same = tiny_model("bert", "base", hidden_size=48, num_attention_heads=4)
    method = MiniLM(MiniLMConfig(), _ctx(same, teacher))
    batch = _batch()
    out = method.loss(
        batch,
        forward_features(same, batch, method.student_request()),
        forward_features(teacher, batch, method.teacher_request()),
    )
    assert set(out.parts) == {"attention", "value_relation"} and torch.isfinite(out.total)


def _corpus_run(tmp_path: Path, method: str, **extra) -> dict:
    teacher = save_tiny_pair(tmp_path / "teacher", "bert", num_labels=2)
    student = {"init": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 4}
    return corpus_run(tmp_path, teacher, student, {"name": method, **extra}, name=method, max_steps=4)


def test_corpus_distillation_then_finetune(tmp_path):
    cfg = build_run_config(_corpus_run(tmp_path, "minilmv2", relation_heads=4))
    result = train(cfg, progress=False)
    assert result.steps == 4 and result.metrics == {}
    log = (tmp_path / "minilmv2" / "log.jsonl").read_text()
    assert "loss/rel_QQ" in log and "loss/rel_VV" in log
    assert '"loss/relation_chunks": 1.0' in log  # the automatic choice: the tiny relation fits whole
    write_tiny_task(tmp_path / "train.jsonl", 16)
    code = main(
        [
            "finetune",
            "--no-progress",
            "--run-dir",
            str(tmp_path / "ft"),
            "data.task=custom",
            f"data.train_file={tmp_path / 'train.jsonl'}",
            "data.text_columns=[text]",
            "data.max_length=32",
            "models.student.init=pretrained",
            f"models.student.path={tmp_path / 'minilmv2' / 'student'}",
            "models.teacher=null",
            "train.max_steps=2",
            "train.report_to=[]",
        ]
    )
    assert code == 0


def test_minilm_v1_on_corpus(tmp_path):
    cfg = build_run_config(_corpus_run(tmp_path, "minilm"))
    assert train(cfg, progress=False).steps == 4


def test_automatic_teacher_layer_probe(tmp_path, capsys):
    import json

    probe = {"plan": {"name": "layer_probe", "layers": [1, 2], "steps": 10}}
    cfg = build_run_config(_corpus_run(tmp_path, "minilmv2", relation_heads=4, teacher_layer="auto") | probe)
    run(cfg, progress=False)
    probe = json.loads((tmp_path / "minilmv2" / "teacher_layer_probe.json").read_text())
    assert set(probe["scores"]) == {"1", "2"} and probe["chosen_layer"] in (1, 2)
    assert probe["chosen_layer"] == int(max(probe["scores"], key=probe["scores"].get))
    recipe = json.loads((tmp_path / "minilmv2" / "student" / "recipe.json").read_text())
    assert recipe["config"]["method"]["teacher_layer"] == probe["chosen_layer"]
    assert "teacher-layer probe" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="teacher_layer"):
        build_run_config(_corpus_run(tmp_path, "minilmv2", teacher_layer="last"))
