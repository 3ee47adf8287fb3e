"""Feature capture: hooked Q/K/V equal a manual recomputation, hooks are scoped, outputs are typed."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from distil.adapters import capture_qkv, forward_features, model_inputs
from distil.errors import ModelError
from distil.models.families import SUPPORTED, get_layers
from distil.types import Batch, FeatureRequest
from factories import FAMILIES, VOCAB_SIZE, tiny_config, tiny_model

LENGTHS = (6, 4)  # two sequences of different length: the second is right-padded


def _batch(model: torch.nn.Module) -> Batch:
    gen = torch.Generator().manual_seed(7)
    # Ids above 4 avoid every family's special/pad ids (RoBERTa positions depend on the pad id).
    ids = torch.randint(5, VOCAB_SIZE, (len(LENGTHS), max(LENGTHS)), generator=gen)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, model.config.pad_token_id)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=torch.zeros_like(ids),
        labels=torch.tensor([0, 1]),
        idx=torch.tensor([10, 11]),
    )


def _projections(family: str, block: torch.nn.Module) -> tuple[torch.nn.Module | None, list]:
    """(pre-norm, [q, k, v] or [fused]) written out per family, independent of the path table."""
    if family == "gpt2":
        return block.ln_1, [block.attn.c_attn]
    if hasattr(block, "self_attn") and hasattr(block.self_attn, "qkv_proj"):  # Phi-3: fused, grouped
        return block.input_layernorm, [block.self_attn.qkv_proj]
    if hasattr(block, "self_attn") and not hasattr(block, "input_layernorm"):  # OLMo-2: no norm before
        a = block.self_attn
        return None, [a.q_proj, a.k_proj, a.v_proj]
    if hasattr(block, "self_attn"):  # Llama, Mistral, Qwen2/3, Gemma 2/3: input norm, then q/k/v_proj
        a = block.self_attn
        return block.input_layernorm, [a.q_proj, a.k_proj, a.v_proj]
    if family == "distilbert":
        a = block.attention
        return None, [a.q_lin, a.k_lin, a.v_lin]
    if family == "deberta-v2":
        a = block.attention.self
        return None, [a.query_proj, a.key_proj, a.value_proj]
    a = block.attention.self
    return None, [a.query, a.key, a.value]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# DeBERTa-v2 with share_att_key (as in the released v3 checkpoints) calls query_proj/key_proj a second
# time on the relative-position embeddings; the capture must keep the token projections.
MANUAL_CASES = [(f, {}) for f in FAMILIES] + [("deberta-v2", {"share_att_key": True})]


@pytest.mark.parametrize(("family", "overrides"), MANUAL_CASES)
def test_qkv_equal_manual_projection_of_layer_input(family: str, overrides: dict) -> None:
    model = tiny_model(family, **overrides)
    request = FeatureRequest(hidden_states=True, qkv_layers=(0, 1))
    with torch.no_grad():
        feats = forward_features(model, _batch(model), request)
        assert set(feats.qkv) == {0, 1}
        assert len(feats.hidden_states) == 3
        for index, block in enumerate(get_layers(model)):
            norm, modules = _projections(family, block)
            x = feats.hidden_states[index]
            x = norm(x) if norm is not None else x
            expected = [m(x) for m in modules]
            if len(expected) == 1:  # [Q | K | V], K and V as wide as the key/value heads
                kv = int(
                    getattr(model.config, "num_key_value_heads", None) or model.config.num_attention_heads
                )
                d = expected[0].shape[-1] // (model.config.num_attention_heads + 2 * kv)
                sizes = [model.config.num_attention_heads * d, kv * d, kv * d]
                expected = list(expected[0].split(sizes, dim=-1))
            got = feats.qkv[index]
            for want, have in zip(expected, (got.query, got.key, got.value), strict=True):
                assert have.shape[:2] == (len(LENGTHS), max(LENGTHS))
                torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)
            assert got.num_heads * got.head_dim == got.query.shape[-1]


def test_bert_attention_rebuilt_from_captured_qk() -> None:
    model = tiny_model("bert")
    batch = _batch(model)
    with torch.no_grad():
        feats = forward_features(model, batch, FeatureRequest(attentions=True, qkv_layers=(1,)))
    qkv = feats.qkv[1]
    b, s, _ = qkv.query.shape
    q = qkv.query.view(b, s, qkv.num_heads, qkv.head_dim).transpose(1, 2)
    k = qkv.key.view(b, s, qkv.num_kv_heads, qkv.head_dim).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(qkv.head_dim)
    scores = scores.masked_fill(batch.attention_mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    torch.testing.assert_close(scores.softmax(-1), feats.attentions[1], atol=1e-6, rtol=1e-5)


def test_llama_grouped_query_widths() -> None:
    model = tiny_model("llama")
    with torch.no_grad(), capture_qkv(model, [0]) as qkv:
        model(**model_inputs(model, _batch(model)))
    got = qkv[0]
    assert (got.num_heads, got.num_kv_heads, got.head_dim) == (4, 2, 8)
    assert got.query.shape[-1] == 4 * 8
    assert got.key.shape[-1] == got.value.shape[-1] == 2 * 8


def test_hooks_removed_on_exit_and_on_exception() -> None:
    model = tiny_model("bert")
    before = _hook_count(model)
    _, modules = _projections("bert", get_layers(model)[0])
    with capture_qkv(model, [0]):
        assert all(len(m._forward_hooks) == 1 for m in modules)
    assert all(not m._forward_hooks for m in modules)
    with pytest.raises(RuntimeError, match="boom"), capture_qkv(model, [0, 1]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in modules)
    assert _hook_count(model) == before


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_gradient_flows_from_captured_query(family: str) -> None:
    model = tiny_model(family)
    with capture_qkv(model, [-1]) as qkv:
        model(**model_inputs(model, _batch(model)))
    qkv[1].query.pow(2).sum().backward()
    _, modules = _projections(family, get_layers(model)[1])
    grad = modules[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_attentions_returned_for_sdpa_model(family: str) -> None:
    model = AutoModelForSequenceClassification.from_config(tiny_config(family)).eval()
    assert model.config._attn_implementation == "sdpa"  # the transformers 5 default
    with torch.no_grad():
        feats = forward_features(model, _batch(model), FeatureRequest(hidden_states=True, attentions=True))
    assert len(feats.attentions) == 2
    assert feats.attentions[0].shape == (2, 4, 6, 6)
    assert len(feats.hidden_states) == 3
    assert model.config._attn_implementation == "eager"


def test_missing_attentions_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("bert")
    model.set_attn_implementation("sdpa")
    monkeypatch.setattr(model, "set_attn_implementation", lambda *a, **k: None)
    with pytest.raises(ModelError, match="eager"), torch.no_grad():
        forward_features(model, _batch(model), FeatureRequest(attentions=True))


def test_features_fields_follow_request() -> None:
    batch = _batch(tiny_model("bert"))
    with torch.no_grad():
        seq = forward_features(tiny_model("bert"), batch, FeatureRequest())
        base = forward_features(tiny_model("bert", "base"), batch, FeatureRequest(qkv_layers=(0,)))
        dec = forward_features(tiny_model("gpt2", "lm"), batch, FeatureRequest(logits=False))
    assert seq.logits.shape == (2, 2)
    assert seq.hidden_states is None and seq.attentions is None and seq.qkv == {}
    assert base.logits is None and set(base.qkv) == {0}
    assert torch.equal(seq.attention_mask, batch.attention_mask)
    assert dec.logits is None and dec.causal and not seq.causal


@pytest.mark.parametrize("family", FAMILIES)
def test_model_inputs_selects_forward_keys(family: str) -> None:
    model = tiny_model(family)
    inputs = model_inputs(model, _batch(model))
    keeps_types = family in ("bert", "roberta", "xlm-roberta", "electra")  # deberta-v2 has type_vocab_size=0
    expected = {"input_ids", "attention_mask"} | ({"token_type_ids"} if keeps_types else set())
    assert set(inputs) == expected


_T5 = {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 32}
_BART = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2}
_BART |= {"decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "vocab_size": 32}


@pytest.mark.parametrize(("family", "kwargs"), [("t5", _T5), ("bart", _BART)])
def test_unsupported_architecture_lists_supported(family: str, kwargs: dict) -> None:
    model = AutoModel.from_config(AutoConfig.for_model(family, **kwargs))
    batch = Batch.from_mapping({"input_ids": torch.ones(1, 3, dtype=torch.long)})
    for call in (
        lambda: capture_qkv(model, [0]).__enter__(),
        lambda: model_inputs(model, batch),
        lambda: forward_features(model, batch, FeatureRequest()),
    ):
        with pytest.raises(ModelError, match="Supported model types") as err:
            call()
        assert all(name in str(err.value) for name in SUPPORTED)


def test_latest_forward_wins() -> None:
    model = tiny_model("bert")
    first, second = _batch(model), _batch(model)
    second = second.replace(input_ids=second.input_ids.flip(0))
    with torch.no_grad(), capture_qkv(model, [0]) as qkv:
        model(**model_inputs(model, first))
        model(**model_inputs(model, second))
        again = forward_features(model, second, FeatureRequest(qkv_layers=(0,))).qkv[0]
    torch.testing.assert_close(qkv[0].query, again.query)


def test_negative_and_duplicate_layer_indices() -> None:
    model = tiny_model("distilbert")
    with torch.no_grad(), capture_qkv(model, [-1, -2, 0]) as qkv:
        model(**model_inputs(model, _batch(model)))
    assert sorted(qkv) == [0, 1]


@pytest.mark.parametrize("index", [2, -3, 1.0])
def test_bad_layer_index_raises_with_valid_range(index: object) -> None:
    model = tiny_model("bert")
    with pytest.raises(ModelError, match=r"0\.\.1"), capture_qkv(model, [0, index]):
        pass
    assert _hook_count(model) == 0


@pytest.mark.parametrize(("family", "head"), [("bert", "mlm"), ("gpt2", "lm")])
def test_head_positions_give_the_selected_rows_of_the_full_logits(family: str, head: str) -> None:
    model = tiny_model(family, head)
    batch = _batch(model)
    positions = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    positions[0, 1], positions[0, 4], positions[1, 2] = True, True, True
    request = FeatureRequest(hidden_states=True)
    with torch.no_grad():
        full = forward_features(model, batch, request)
        hooks = _hook_count(model)  # transformers may add its own on a first forward
        part = forward_features(model, batch.replace(head_positions=positions), request)
    assert part.logits.shape == (3, full.logits.shape[-1])
    torch.testing.assert_close(part.logits, full.logits[positions])
    torch.testing.assert_close(part.hidden_states[-1], full.hidden_states[-1])
    assert _hook_count(model) == hooks


def test_head_positions_need_an_lm_head() -> None:
    model = tiny_model("bert")  # a sequence classifier: no output-embedding layer
    batch = _batch(model)
    positions = batch.attention_mask.bool()
    with pytest.raises(ModelError, match="output-embedding"), torch.no_grad():
        forward_features(model, batch.replace(head_positions=positions), FeatureRequest())
