"""DistilBERT-style and TinyBERT-style baselines: losses against hand computations, stages, end to end."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from distil.adapters import forward_features
from distil.adapters.masking import IGNORE_INDEX
from distil.config import build_run_config
from distil.errors import ConfigError
from distil.losses import attention_scores
from distil.methods import MethodContext
from distil.methods.distilbert import DistilBERTConfig, DistilBERTStyle, distilbert_layers
from distil.methods.tinybert import TinyBERT, TinyBERTConfig
from distil.methods.tinybert_prediction import TinyBERTPrediction, TinyBERTPredictionConfig
from distil.models.students import student_from_layers
from distil.plans import plan_for, run
from distil.types import Batch
from factories import tiny_config, tiny_model, tiny_tokenizer
from helpers import corpus_run, tiny_run

TEXTS = ["the cat is a good film .", "he said that the dog runs", "a very bad movie"]


def _ctx(student, teacher, num_labels=0):
    return MethodContext(student=student, teacher=teacher, is_regression=False, num_labels=num_labels)


def _batch():
    enc = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    assert not bool(enc["attention_mask"].all()), "the batch must contain padding"
    return Batch.from_mapping(dict(enc))


def _saved(tmp_path: Path, model, name: str):
    """Save with the tiny tokenizer and reload, as a run would (sets name_or_path and architectures)."""
    model.save_pretrained(tmp_path / name)
    tiny_tokenizer().save_pretrained(tmp_path / name)
    return type(model).from_pretrained(tmp_path / name, attn_implementation="eager").eval()


def _kl(s, t, temperature):
    p = F.softmax(t / temperature, -1)
    return (p * (p.log() - F.log_softmax(s / temperature, -1))).sum(-1).mean() * temperature**2


def _cos(s, t):
    return (1 - (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))).mean()


def test_distilbert_layer_choice_12_to_6():
    assert distilbert_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    with pytest.raises(ConfigError):
        distilbert_layers(12, 4)


def test_distilbert_corpus_loss_equals_hand_computation(tmp_path):
    teacher = _saved(tmp_path, AutoModelForMaskedLM.from_config(tiny_config("bert")), "mlm")
    student = student_from_layers(teacher, [2]).train()
    method = DistilBERTStyle(DistilBERTConfig(), _ctx(student, teacher))
    batch = _batch()
    torch.manual_seed(5)
    masked = method.prepare_batch(batch)
    torch.manual_seed(5)
    assert torch.equal(method.prepare_batch(batch).mlm_labels, masked.mlm_labels)  # global-RNG deterministic
    labels, real = masked.mlm_labels, batch.attention_mask.bool()
    assert bool((labels != IGNORE_INDEX).any()) and not bool((labels != IGNORE_INDEX)[~real].any())
    changed = masked.input_ids != batch.input_ids
    assert not bool((changed & (labels == IGNORE_INDEX)).any())  # only selected positions are replaced
    s = forward_features(student, masked, method.student_request())
    with torch.no_grad():
        t = forward_features(teacher, masked, method.teacher_request())
    out = method.loss(masked, s, t)

    inputs = {k: getattr(masked, k) for k in ("input_ids", "attention_mask", "token_type_ids")}
    so = student(**inputs, output_hidden_states=True)
    with torch.no_grad():
        to = teacher(**inputs, output_hidden_states=True)
    ce = _kl(so.logits[real], to.logits[real], 2.0)
    mlm = F.cross_entropy(so.logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
    cos = _cos(so.hidden_states[-1][real], to.hidden_states[-1][real])
    for name, value in (("ce", ce), ("mlm", mlm), ("cos", cos)):
        torch.testing.assert_close(out.parts[name], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.total, 5 * ce + 2 * mlm + cos, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="prepare_batch"):
        method.loss(batch, s, t)
    only_masked = DistilBERTStyle(DistilBERTConfig(restrict_ce_to_mask=True), _ctx(student, teacher))
    selected = labels != IGNORE_INDEX
    torch.testing.assert_close(
        only_masked.loss(masked, s, t).parts["ce"], _kl(so.logits[selected], to.logits[selected], 2.0)
    )


@pytest.mark.parametrize("alpha_ce", [0.0, 5.0])
def test_distilbert_head_runs_only_where_a_term_reads(tmp_path, alpha_ce):
    teacher = _saved(tmp_path, AutoModelForMaskedLM.from_config(tiny_config("bert")), "mlm")
    student = student_from_layers(teacher, [2]).train()
    method = DistilBERTStyle(DistilBERTConfig(alpha_ce=alpha_ce), _ctx(student, teacher))
    torch.manual_seed(3)
    masked = method.prepare_batch(_batch())
    expected = masked.mlm_labels != IGNORE_INDEX if alpha_ce == 0 else masked.attention_mask.bool()
    assert torch.equal(masked.head_positions, expected)

    def parts(batch):
        s = forward_features(student, batch, method.student_request())
        with torch.no_grad():
            t = forward_features(teacher, batch, method.teacher_request())
        positions = batch.head_positions
        assert s.logits.shape[0] == (int(positions.sum()) if positions is not None else 3)
        return method.loss(batch, s, t).parts

    got, want = parts(masked), parts(masked.replace(head_positions=None))
    assert set(got) == set(want) == ({"mlm", "cos"} | ({"ce"} if alpha_ce else set()))
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)


def test_distilbert_smoothing_counts_tokens_seen(tmp_path):
    teacher = _saved(tmp_path, AutoModelForMaskedLM.from_config(tiny_config("bert")), "mlm")
    method = DistilBERTStyle(
        DistilBERTConfig(smoothing=True), _ctx(student_from_layers(teacher, [1]), teacher)
    )
    batch = _batch()
    method.prepare_batch(batch)
    counts = method.state_dict()["token_counts"]
    expected = torch.bincount(batch.input_ids[batch.attention_mask.bool()], minlength=counts.numel())
    assert torch.equal(counts, expected.double()) and not counts.requires_grad


def test_distilbert_labelled_task_loss(tmp_path):
    teacher = tiny_model("bert", "seq", num_labels=2)
    student = tiny_model("bert", "seq", num_labels=2, hidden_size=16, num_attention_heads=2).train()
    method = DistilBERTStyle(DistilBERTConfig(alpha_task=0.5), _ctx(student, teacher, num_labels=2))
    batch = _batch().replace(labels=torch.tensor([1, 0, 1]))
    assert method.prepare_batch(batch) is batch  # no masking on a labelled task
    s = forward_features(student, batch, method.student_request())
    with torch.no_grad():
        t = forward_features(teacher, batch, method.teacher_request())
    out = method.loss(batch, s, t)
    assert set(out.parts) == {"ce", "cos", "task"}
    real = batch.attention_mask.bool()
    projected = method.trainable_modules()["cos_projection"](s.hidden_states[-1])  # 16 -> 32 wide
    cos = _cos(projected[real], t.hidden_states[-1][real])
    ce = _kl(s.logits, t.logits, 2.0)
    task = F.cross_entropy(s.logits, batch.labels)
    torch.testing.assert_close(out.total, 5 * ce + cos + 0.5 * task, rtol=1e-4, atol=1e-5)


def test_distilbert_decoder_next_token_loss(tmp_path):
    teacher = _saved(tmp_path, tiny_model("gpt2", "lm"), "gpt2")
    student = student_from_layers(teacher, [2]).train()
    method = DistilBERTStyle(DistilBERTConfig(), _ctx(student, teacher))
    batch = _batch().replace(token_type_ids=None)
    assert method.prepare_batch(batch) is batch  # decoders are not masked
    s = forward_features(student, batch, method.student_request())
    with torch.no_grad():
        t = forward_features(teacher, batch, method.teacher_request())
    out = method.loss(batch, s, t)
    assert set(out.parts) == {"ce", "next_token", "cos"}
    ids, real = batch.input_ids, batch.attention_mask.bool()
    pairs = real[:, :-1] & real[:, 1:]
    expected = F.cross_entropy(s.logits[:, :-1][pairs], ids[:, 1:][pairs])
    torch.testing.assert_close(out.parts["next_token"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        out.parts["ce"], _kl(s.logits[real], t.logits[real], 2.0), rtol=1e-4, atol=1e-5
    )


def test_distilbert_needs_a_teacher_lm_head(tmp_path):
    base = tmp_path / "base"
    AutoModel.from_config(tiny_config("bert")).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    teacher = AutoModelForMaskedLM.from_pretrained(base)  # head randomly initialised
    student = student_from_layers(teacher, [1])
    with pytest.raises(ConfigError, match="alpha_ce=0"):
        DistilBERTStyle(DistilBERTConfig(), _ctx(student, teacher))
    DistilBERTStyle(DistilBERTConfig(alpha_ce=0.0), _ctx(student, teacher))


def _q_k(model, hidden_states, layer):
    attn = model.base_model.encoder.layer[layer].attention.self
    return attn.query(hidden_states[layer]), attn.key(hidden_states[layer])


def _scores(q, k, heads):
    b, s, w = q.shape
    q, k = (x.view(b, s, heads, w // heads).transpose(1, 2) for x in (q, k))
    return q @ k.transpose(-1, -2) / math.sqrt(w // heads)


def test_attention_scores_share_key_heads_under_grouped_query_attention():
    q, k = torch.randn(2, 5, 4 * 3), torch.randn(2, 5, 2 * 3)
    expected = _scores(q, k.view(2, 5, 2, 3).repeat_interleave(2, dim=2).reshape(2, 5, 12), 4)
    torch.testing.assert_close(attention_scores(q, k, 4, 2), expected)


def test_tinybert_layer_losses_equal_hand_computation():
    teacher = tiny_model("bert", "base", num_hidden_layers=4)
    student = tiny_model("bert", "base", hidden_size=16, num_attention_heads=4).train()
    method = TinyBERT(TinyBERTConfig(projection="per_layer"), _ctx(student, teacher))
    assert method.layer_map == [2, 4]
    batch = _batch()
    s = forward_features(student, batch, method.student_request())
    t = forward_features(teacher, batch, method.teacher_request())
    out = method.loss(batch, s, t)

    real = batch.attention_mask.bool()
    so = student(**batch.tensors(), output_hidden_states=True).hidden_states
    to = teacher(**batch.tensors(), output_hidden_states=True).hidden_states
    proj = method.trainable_modules()["projection"]
    keep = (real[:, None, :, None] & real[:, None, None, :]).expand(-1, 4, -1, -1)
    attention, hidden = 0.0, 0.0
    for m, g in ((1, 2), (2, 4)):
        diff = _scores(*_q_k(student, so, m - 1), 4) - _scores(*_q_k(teacher, to, g - 1), 4)
        attention = attention + diff[keep].pow(2).mean()
        hidden = hidden + (proj[m](so[m]) - to[g])[real].pow(2).mean()
    embedding = (proj[0](so[0]) - to[0])[real].pow(2).mean()
    for name, value in (("attention", attention), ("hidden", hidden), ("embedding", embedding)):
        torch.testing.assert_close(out.parts[name], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.total, attention + hidden + embedding, rtol=1e-4, atol=1e-5)


def test_tinybert_attention_zero_for_identical_models_and_ignores_padding():
    teacher = tiny_model("bert", "base")
    method = TinyBERT(TinyBERTConfig(), _ctx(tiny_model("bert", "base"), teacher))
    batch = _batch()
    same = method.loss(
        batch,
        forward_features(tiny_model("bert", "base"), batch, method.student_request()),
        forward_features(teacher, batch, method.teacher_request()),
    )
    assert all(v.item() < 1e-10 for v in same.parts.values())  # identity projections at equal widths

    student = tiny_model("bert", "base", num_hidden_layers=1)
    method = TinyBERT(TinyBERTConfig(), _ctx(student, teacher))

    def attention(b):
        s = forward_features(student, b, method.student_request())
        t = forward_features(teacher, b, method.teacher_request())
        return method.loss(b, s, t).parts["attention"]

    base = attention(batch)
    assert float(base) > 0
    garbage = batch.replace(input_ids=torch.where(batch.attention_mask.bool(), batch.input_ids, 77))
    torch.testing.assert_close(attention(garbage), base)
    # Three more padded positions.
    longer = Batch.from_mapping({k: F.pad(v, (0, 3), value=0) for k, v in batch.tensors().items()})
    torch.testing.assert_close(attention(longer), base)


def test_tinybert_rejects_head_mismatch_and_rotary_scores_it_cannot_get(monkeypatch):
    teacher = tiny_model("bert", "base")
    with pytest.raises(ConfigError, match="MiniLMv2"):
        TinyBERT(TinyBERTConfig(), _ctx(tiny_model("bert", "base", num_attention_heads=2), teacher))
    TinyBERT(  # no attention term, no head restriction
        TinyBERTConfig(attention_weight=0.0),
        _ctx(tiny_model("bert", "base", num_attention_heads=2), teacher),
    )
    llama = tiny_model("llama", "base")
    # Rotary scores come from the attention itself (transformers' attention interface)...
    method = TinyBERT(TinyBERTConfig(), _ctx(tiny_model("llama", "base"), llama))
    assert method.student_request().score_layers and not method.student_request().qkv_layers
    # ...and a rotary family whose attention did not use the interface would be refused: Q and K are
    # captured before the rotation, so scores rebuilt from them are not the model's.
    from distil.models import families

    unhooked = dataclasses.replace(families.FAMILIES["llama"], attention_interface=False)
    monkeypatch.setitem(families.FAMILIES, "llama", unhooked)
    with pytest.raises(ConfigError, match="rotary"):
        TinyBERT(TinyBERTConfig(), _ctx(tiny_model("llama", "base"), llama))
    corpus = {"data": {"task": "corpus", "corpus": ["x"]}, "method": {"name": "tinybert_prediction"}}
    with pytest.raises(ConfigError, match="labelled task"):
        build_run_config(corpus)


def test_tinybert_prediction_soft_cross_entropy():
    teacher = tiny_model("bert", "seq", num_labels=3)
    student = tiny_model("bert", "seq", num_labels=3, num_hidden_layers=1).train()
    method = TinyBERTPrediction(TinyBERTPredictionConfig(), _ctx(student, teacher, num_labels=3))
    assert len(method.trainable_modules()) == 0
    batch = _batch()
    s = forward_features(student, batch, method.student_request())
    t = forward_features(teacher, batch, method.teacher_request())
    expected = -(F.softmax(t.logits, -1) * F.log_softmax(s.logits, -1)).sum(-1).mean()
    torch.testing.assert_close(method.loss(batch, s, t).total, expected)


def test_tinybert_stage_plan(tmp_path):
    cfg = tiny_run(tmp_path, "tinybert")
    plan = [(step.name, step.config) for step in plan_for(cfg).steps]
    assert [name for name, _ in plan] == ["intermediate", "prediction"]
    assert plan[1][1].models.student.init == "pretrained"
    assert plan[1][1].models.student.path.endswith("stages/intermediate/student")
    assert plan[1][1].method_name == "tinybert_prediction" and plan[0][1].eval.select == "last"
    # A single stage is a plan of one step; on a corpus TinyBERT is the general stage alone.
    assert plan_for(tiny_run(tmp_path, "tinybert_prediction")).single
    student = {"init": "config", "num_layers": 1}
    corpus = build_run_config(_corpus_run(tmp_path, tmp_path / "teacher", student, name="tinybert"))
    assert corpus.plan_name == "single" and plan_for(corpus).single


def _corpus_run(tmp_path: Path, teacher: Path, student: dict, name: str = "distilbert", **method) -> dict:
    return corpus_run(tmp_path, teacher, student, {"name": name, **method}, max_steps=2, checkpoint_every=2)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_distilbert_end_to_end_on_a_corpus(tmp_path, family):
    folder = tmp_path / "teacher"
    lm = (
        AutoModelForMaskedLM.from_config(tiny_config("bert"))
        if family == "bert"
        else tiny_model("gpt2", "lm")
    )
    lm.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # has a [PAD] token, also for GPT-2
    # BERT: a narrower random-init student (cosine through a projection); GPT-2: teacher layers.
    student = (
        {"init": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 4}
        if family == "bert"
        else {"init": "layers", "layers": [2]}
    )
    cfg = build_run_config(_corpus_run(tmp_path, folder, student, smoothing=True))
    result = run(cfg, progress=False)
    assert result.steps == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    terms = {k for r in records for k in r}
    lm_term = "loss/mlm" if family == "bert" else "loss/next_token"
    assert {"loss/ce", "loss/cos", lm_term} <= terms
    if family == "bert":  # the smoothing counts are checkpointed: every real token of 2 x 4 blocks of 16
        saved = load_file(tmp_path / "run" / "checkpoints" / "step-00000002" / "method_state.safetensors")
        assert saved["token_counts"].sum().item() == 2 * 4 * 16
    config = json.loads((result.student_dir / "config.json").read_text())
    assert config["architectures"][0].endswith("ForMaskedLM" if family == "bert" else "LMHeadModel")


def test_tinybert_task_distillation_end_to_end(tmp_path):
    cfg = tiny_run(tmp_path, "tinybert", **{"train.epochs": 1})
    result = run(cfg, progress=False)
    stages = Path(cfg.run_dir) / "stages"
    inter = (stages / "intermediate" / "log.jsonl").read_text()
    assert "loss/attention" in inter and "loss/hidden" in inter and "loss/embedding" in inter
    assert "loss/prediction" in (stages / "prediction" / "log.jsonl").read_text()
    assert (stages / "intermediate" / "student" / "method.safetensors").is_file()
    recipe = json.loads((result.student_dir / "recipe.json").read_text())
    assert set(recipe["stages"]) == {"intermediate", "prediction"}
    AutoModelForSequenceClassification.from_pretrained(result.student_dir)
