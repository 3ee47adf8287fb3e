"""QA logits captured as ``[B, 2, S]`` start/end scores; KD and TED (span heads, start/end KL) on them."""

import pytest
import torch
import torch.nn.functional as F

from distil.adapters import forward_features
from distil.methods import MethodContext
from distil.methods.kd import KD, KDConfig
from distil.training.setup import build_run
from qa_lm_helpers import qa_run

# Tiny Stage-II runs without filter files use random teacher filters on purpose (and say so).
pytestmark = pytest.mark.filterwarnings("ignore:TED Stage II without method.teacher_filters")


def _qa_batch(tmp_path, method="kd", **overrides):
    parts = build_run(qa_run(tmp_path, method, **overrides))
    batch = parts.task.collate([parts.task.train_set[i] for i in range(4)])
    return parts, batch


def test_capture_stacks_start_and_end_scores(tmp_path):
    parts, batch = _qa_batch(tmp_path)
    feats = forward_features(parts.teacher, batch, parts.method.student_request())
    out = parts.teacher(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        token_type_ids=batch.token_type_ids,
    )
    assert feats.logits.shape == (4, 2, batch.input_ids.shape[1])
    assert torch.equal(feats.logits[:, 0], out.start_logits) and torch.equal(
        feats.logits[:, 1], out.end_logits
    )


def _kl(s, t, temp):
    p = F.softmax(t / temp, -1)
    return temp**2 * (p * (p.log() - F.log_softmax(s / temp, -1))).sum(-1).mean()


def test_kd_on_qa_is_the_mean_of_start_and_end_terms(tmp_path):
    parts, batch = _qa_batch(tmp_path)
    ctx = MethodContext(student=parts.student, teacher=parts.teacher, is_regression=False, num_labels=2)
    kd = KD(KDConfig(temperature=2.0, alpha=0.3), ctx)
    s = forward_features(parts.student, batch, kd.student_request())
    with torch.no_grad():
        t = forward_features(parts.teacher, batch, kd.teacher_request())
    out = kd.loss(batch, s, t)
    start, end = batch.labels[:, 0], batch.labels[:, 1]
    task = (F.cross_entropy(s.logits[:, 0], start) + F.cross_entropy(s.logits[:, 1], end)) / 2
    soft = (_kl(s.logits[:, 0], t.logits[:, 0], 2.0) + _kl(s.logits[:, 1], t.logits[:, 1], 2.0)) / 2
    torch.testing.assert_close(out.parts["task"], task)
    torch.testing.assert_close(out.parts["kd"], soft)
    torch.testing.assert_close(out.total, 0.3 * soft + 0.7 * task)


def test_ted_on_qa_stage1_span_heads_and_stage2_kl(tmp_path):
    stage1 = {"method.side": "student", "eval.select": "last"}
    parts, batch = _qa_batch(tmp_path, "ted_filters", **stage1)
    m = parts.method
    heads = m.trainable_modules()["heads"]
    assert heads["layer_1"].out.weight.shape == (2, 32)
    s = forward_features(parts.student, batch, m.student_request())
    out = m.loss(batch, s, None)
    g = m.filters(s.hidden_states)[0]
    scores = heads["layer_1"].out(g)  # [B, S, 2]
    expected = (
        F.cross_entropy(scores[..., 0], batch.labels[:, 0])
        + F.cross_entropy(scores[..., 1], batch.labels[:, 1])
    ) / 2
    torch.testing.assert_close(out.parts["filter_1"], expected)
    # Chance: the loss of the start and end priors of this batch, i.e. their mean entropy.
    starts, ends = (torch.bincount(batch.labels[:, i]).double() for i in range(2))
    prior = [c[c > 0] / c.sum() for c in (starts, ends)]
    assert m.chance_loss() == pytest.approx(float(sum(-(p * p.log()).sum() for p in prior) / 2))
    stage2 = {"plan.name": "single", "method.layer_map": [2], "method.kl_alpha": 10.0}
    parts, batch = _qa_batch(tmp_path / "s2", "ted", **stage2)
    m = parts.method
    s = forward_features(parts.student, batch, m.student_request())
    with torch.no_grad():
        t = forward_features(parts.teacher, batch, m.teacher_request())
    out = m.loss(batch, s, t)
    kl = (_kl(s.logits[:, 0], t.logits[:, 0], 2.0) + _kl(s.logits[:, 1], t.logits[:, 1], 2.0)) / 2
    torch.testing.assert_close(out.parts["kl"], kl)
    torch.testing.assert_close(out.total, out.parts["task"] + 10.0 * kl + 20.0 * out.parts["filter_mse"])
