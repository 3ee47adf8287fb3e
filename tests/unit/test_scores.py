"""Attention scores handed over by the attention computation (`distil.adapters.scores`): the model's own
scores, the same loss and gradients as the recomputation where that is exact, and the model unchanged."""

from __future__ import annotations

import pytest
import torch

from distil.adapters import forward_features
from distil.adapters.scores import capture_scores
from distil.losses import attention_score_mse, attention_scores
from distil.models.families import FAMILIES, family_of
from distil.types import Batch, FeatureRequest
from factories import TINY_CONFIGS, tiny_model

INTERFACE = [f for f in TINY_CONFIGS if FAMILIES[f].attention_interface]


def _model(family: str, implementation: str = "eager"):
    model = tiny_model(family, "lm" if FAMILIES[family].causal else "seq").eval()
    if implementation != "eager":
        model.set_attn_implementation(implementation)
    return model


def _batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return Batch(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("family", INTERFACE)
def test_handed_over_scores_are_the_models_own(family):
    """softmax(scores + mask) is the attention the model itself computes (rotary families included), and
    the model's outputs do not change, whichever implementation computes the other layers."""
    model, batch = _model(family), _batch()
    with torch.no_grad():
        own = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
        with capture_scores(model, [1]) as scores:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    allowed = batch.attention_mask[:, None, None, :].bool()
    if FAMILIES[family].causal:
        allowed = allowed & torch.ones(12, 12, dtype=torch.bool).tril()
    probs = torch.softmax(scores[1].masked_fill(~allowed, float("-inf")), -1)
    real = batch.attention_mask.bool()[:, None, :, None].expand_as(probs)  # rows of real queries
    torch.testing.assert_close(probs[real], own.attentions[1][real], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, own.logits, atol=0, rtol=0)
    assert model.config._attn_implementation == "eager"  # restored


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_models_sdpa_computes_the_other_layers(family):
    model, batch = _model(family, "sdpa"), _batch()
    with torch.no_grad():
        ref = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with capture_scores(model, [0]) as scores:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert set(scores) == {0} and model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def _scores(features, layer):
    if layer in features.scores:
        return features.scores[layer]
    q = features.qkv[layer]
    return attention_scores(q.query, q.key, q.num_heads, q.num_kv_heads)


@pytest.mark.parametrize("family", ["bert", "gpt2", "distilbert"])
def test_the_score_loss_and_its_gradients_equal_the_recomputation(family):
    """Where Q K^T / sqrt(d) from captured Q and K is exact (no rotary embedding), TinyBERT's score loss
    and its gradients are the same either way."""
    student, teacher, batch = _model(family), _model(family), _batch(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    losses, grads = [], []
    for request in (
        FeatureRequest(logits=False, score_layers=(0, 1)),
        FeatureRequest(logits=False, qkv_layers=(0, 1)),
    ):
        student.zero_grad()
        s = forward_features(student, batch, request)
        with torch.no_grad():
            t = forward_features(teacher, batch, request)
        assert bool(s.scores) == bool(request.score_layers)  # handed over, or rebuilt from Q and K
        loss = sum(
            attention_score_mse(_scores(s, i), _scores(t, i), batch.attention_mask, causal=s.causal)
            for i in (0, 1)
        )
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_a_family_without_the_interface_is_refused_clearly():
    model = _model("deberta-v2")
    assert not family_of(model).attention_interface
    from distil.errors import ModelError

    with pytest.raises(ModelError, match="rebuilt from captured Q and K"), capture_scores(model, [0]):
        pass
