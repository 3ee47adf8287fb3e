"""Every declared family record holds for its tiny model: each field that is set is checked on a real model.

Adding a family is one record in `distil.models.families` plus one tiny config in `factories.TINY_CONFIGS`;
this file then checks the record against the model transformers builds.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from distil.adapters import capture_qkv, model_inputs
from distil.deploy import FP32_MAX_REL_DIFF, ExportError, export_onnx
from distil.errors import ConfigError
from distil.models.families import FAMILIES, family_of, get_layers, num_layers, position_limit
from distil.models.heads import HEADS, head_of_architectures
from distil.models.students import student_from_config
from distil.pruning.units import prunable_units
from factories import TINY_CONFIGS, VOCAB_SIZE, save_tiny_pair, tiny_model

DECLARED = tuple(FAMILIES)
# Every declared family as its tiny config builds it, and the variants a family record must also hold for:
# Llama 3's RoPE scaling, Mistral's sliding window (shorter than the longest test input).
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
CASES = [pytest.param(f, {}, id=f) for f in DECLARED] + [
    pytest.param("llama", {"rope_parameters": LLAMA3_ROPE}, id="llama3-rope-scaling"),
    pytest.param("mistral", {"sliding_window": 8}, id="mistral-sliding-window"),
]


def _ids(model: torch.nn.Module, length: int, rows: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(length)
    return torch.randint(5, VOCAB_SIZE, (rows, length), generator=gen)


def _hidden(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return out.hidden_states[-1]


def test_every_declared_family_has_a_tiny_config_and_no_more() -> None:
    assert set(TINY_CONFIGS) == set(DECLARED)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_layout_depth_and_widths(family: str, overrides: dict) -> None:
    model = tiny_model(family, "base", **overrides)
    record = family_of(model)
    assert len(get_layers(model)) == num_layers(model.config) == 2
    hidden, heads, ffn = (getattr(model.config, key) for key in record.width_keys)
    assert (hidden, heads) == (32, 4) and ffn in (64, None)  # GPT-2's n_inner None means 4 * n_embd
    roles = (record.fused_qkv,) if record.fused_qkv else (record.query, record.key, record.value)
    assert all(role is not None and get_layers(model)[0].get_submodule(role) for role in roles)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_qkv_capture_widths(family: str, overrides: dict) -> None:
    model = tiny_model(family, "base", **overrides)
    with torch.no_grad(), capture_qkv(model, [0, 1]) as qkv:
        model(input_ids=_ids(model, 6))
    kv_heads = int(getattr(model.config, "num_key_value_heads", None) or 4)
    for layer in (0, 1):
        got = qkv[layer]
        assert (got.num_heads, got.num_kv_heads, got.head_dim) == (4, kv_heads, 8)
        assert got.query.shape == (2, 6, 32) and got.key.shape == got.value.shape == (2, 6, 8 * kv_heads)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_causal_flag_matches_the_model(family: str, overrides: dict) -> None:
    model = tiny_model(family, "base", **overrides)
    ids = _ids(model, 8)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 5) % (VOCAB_SIZE - 5) + 5
    earlier_same = torch.allclose(_hidden(model, ids)[:, :-1], _hidden(model, changed)[:, :-1], atol=1e-6)
    assert earlier_same == family_of(model).causal


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_token_type_ids_reach_the_model_exactly_when_it_has_a_type_table(
    family: str, overrides: dict
) -> None:
    model = tiny_model(family, "base", **overrides)
    has_table = any(name.endswith("token_type_embeddings") for name, _ in model.named_modules())
    ids = _ids(model, 6)
    inputs = model_inputs(model, {"input_ids": ids, "token_type_ids": torch.ones_like(ids)})
    assert ("token_type_ids" in inputs) == has_table
    assert (family_of(model).token_type_ids and getattr(model.config, "type_vocab_size", 1) > 0) == has_table


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_position_limit_is_the_longest_input_the_model_takes(family: str, overrides: dict) -> None:
    model = tiny_model(family, "base", **overrides)
    limit = position_limit(model.config)
    if limit is None:
        _hidden(model, _ids(model, 80, rows=1))  # longer than max_position_embeddings: rotary or relative
        assert family_of(model).rotary or not getattr(model.config, "position_biased_input", True)
        return
    _hidden(model, _ids(model, limit, rows=1))
    with pytest.raises((IndexError, RuntimeError, ValueError)):
        _hidden(model, _ids(model, limit + 1, rows=1))


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_rotary_flag_says_whether_scores_from_captured_qk_are_the_models(
    family: str, overrides: dict
) -> None:
    model = tiny_model(family, "base", **overrides)
    if getattr(model.config, "relative_attention", False):
        pytest.skip("DeBERTa adds relative-position terms; TinyBERT takes its content term only")
    ids = _ids(model, 6)
    with torch.no_grad(), capture_qkv(model, [1]) as qkv:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    attentions = out.attentions
    got = qkv[1]
    q = got.query.view(2, 6, got.num_heads, got.head_dim).transpose(1, 2)
    k = got.key.view(2, 6, got.num_kv_heads, got.head_dim).transpose(1, 2)
    k = k.repeat_interleave(got.num_heads // got.num_kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(got.head_dim)
    if family_of(model).causal:
        scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    same = torch.allclose(scores.softmax(-1), attentions[1], atol=1e-5)
    assert same == (not family_of(model).rotary)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_narrower_student_of_every_family_builds_and_runs(family: str, overrides: dict) -> None:
    teacher = tiny_model(family, "seq", **overrides)
    student = student_from_config(
        teacher.config, num_layers=1, hidden_size=16, num_heads=2, intermediate_size=24
    )
    widths = tuple(getattr(student.config, key) for key in family_of(student).width_keys)
    assert widths == (16, 2, 24) and num_layers(student.config) == 1
    ids = _ids(student, 5)
    with torch.no_grad():
        assert student(input_ids=ids).logits.shape == (2, 2)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_pruning_layout_covers_every_layer_parameter_or_is_refused(family: str, overrides: dict) -> None:
    causal = family_of(tiny_model(family, "base", **overrides)).causal
    model = tiny_model(family, "lm" if causal else "seq", **overrides)
    if family_of(model).pruning is None:
        with pytest.raises(ConfigError, match="structured pruning supports"):
            prunable_units(model)
        return
    units = prunable_units(model)  # raises when a layer parameter has no pruning rule
    kinds = ("kv", "ffn") if causal and family != "gpt2" else ("qk", "vo", "ffn")  # decoders: KV groups
    assert {f"l{i}_{kind}" for i in range(2) for kind in kinds} <= set(units.groups)


@pytest.mark.parametrize(("family", "overrides"), CASES)
def test_every_family_exports_to_onnx_within_tolerance(tmp_path, family: str, overrides: dict) -> None:
    model_dir = save_tiny_pair(tmp_path / family, family, **overrides)
    result = export_onnx(model_dir)  # raises when the graph's logits are outside the tolerance
    assert result.fp32.max_rel <= FP32_MAX_REL_DIFF


@pytest.mark.parametrize("family", [f for f, r in FAMILIES.items() if r.onnx_optimizer is not None])
def test_onnx_optimizer_fuses_the_familys_graph(tmp_path, family: str) -> None:
    model_dir = save_tiny_pair(tmp_path / family, family)
    export_onnx(model_dir, optimize=True)  # raises when the optimiser fused no attention
    assert (model_dir / "onnx" / "model.onnx").is_file()


def test_optimize_is_refused_for_a_family_without_an_optimizer(tmp_path) -> None:
    family = next(f for f, r in FAMILIES.items() if r.onnx_optimizer is None and not r.causal)
    model_dir = save_tiny_pair(tmp_path / family, family)
    with pytest.raises(ExportError, match="--optimize supports"):
        export_onnx(model_dir, optimize=True)


@pytest.mark.parametrize(
    ("head", "auto", "family"),
    [
        ("seq", AutoModelForSequenceClassification, "bert"),
        ("lm", AutoModelForCausalLM, "gpt2"),
        ("lm", AutoModelForCausalLM, "llama"),
        ("base", AutoModel, "bert"),
    ],
)
def test_head_records_name_the_classes_transformers_builds(head: str, auto: type, family: str) -> None:
    model = tiny_model(family, head)
    assert isinstance(model, auto._model_mapping[type(model.config)])
    assert HEADS[head].auto_class == auto.__name__
    assert head_of_architectures([type(model).__name__]) == head
    ids = _ids(model, 4)
    with torch.no_grad():
        outputs = model(input_ids=ids)
    assert all(getattr(outputs, name, None) is not None for name in HEADS[head].onnx_outputs)
