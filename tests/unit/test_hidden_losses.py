"""Hidden-state MSE and layer maps (distil.losses.hidden): properties, closed forms, masks, errors."""

import pytest
import torch
import torch.nn.functional as F

from distil.errors import ConfigError
from distil.losses import hidden_mse, mapped_hidden_mse
from distil.models.layer_maps import resolve_layer_map


def _pair(b=3, s=5, d=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, s, d, generator=g), torch.randn(b, s, d, generator=g)


def test_zero_on_identical_inputs():
    x, _ = _pair()
    assert hidden_mse(x, x.clone()).item() == 0.0
    assert hidden_mse(x, x.clone(), torch.ones(3, 5)).item() == 0.0


def test_unmasked_is_the_element_mean_including_padding():
    s, t = _pair()
    assert torch.allclose(hidden_mse(s, t), F.mse_loss(s, t))


def test_masked_mean_runs_over_real_tokens_and_all_features():
    s, t = _pair()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    expected = sum(((s[i, j] - t[i, j]) ** 2).sum() for i in range(3) for j in range(5) if mask[i, j])
    expected = expected / (int(mask.sum()) * 4)
    assert torch.allclose(hidden_mse(s, t, mask), expected)


def test_padding_values_never_matter_when_masked():
    s, t = _pair()
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 3)
    s2, t2 = s.clone(), t.clone()
    s2[:, 3:] = float("nan")
    t2[:, 3:] = 1e6
    s2.requires_grad_(True)
    loss = hidden_mse(s2, t2, mask)
    assert torch.allclose(loss, hidden_mse(s, t, mask))
    loss.backward()
    assert torch.isfinite(s2.grad).all() and (s2.grad[:, 3:] == 0).all()


def test_all_masked_gives_zero_attached_to_the_graph():
    s, t = _pair()
    s.requires_grad_(True)
    loss = hidden_mse(s, t, torch.zeros(3, 5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_teacher_gets_no_gradient_and_result_is_float32():
    s, t = _pair()
    s, t = s.half().requires_grad_(True), t.half().requires_grad_(True)
    loss = hidden_mse(s, t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad is not None and t.grad is None


def test_shape_errors():
    s, t = _pair()
    with pytest.raises(ValueError, match="student"):
        hidden_mse(s, t[:, :4])
    with pytest.raises(ValueError, match="mask"):
        hidden_mse(s, t, torch.ones(3, 4))
    with pytest.raises(ValueError):
        mapped_hidden_mse([s], [t, t])
    with pytest.raises(ValueError):
        mapped_hidden_mse([], [])


def test_mapped_mse_is_the_mean_over_pairs():
    s, t = _pair()
    s2, t2 = _pair(d=4)
    s2 = s2 * 3
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 3)
    expected = (hidden_mse(s, t, mask) + hidden_mse(s2, t2, mask)) / 2
    assert torch.allclose(mapped_hidden_mse([s, s2], [t, t2], mask), expected)


@pytest.mark.parametrize(
    ("spec", "teacher", "student", "expected"),
    [
        ("paper", 12, 6, [1, 3, 5, 8, 10, 12]),
        ("paper", 6, 3, [1, 4, 6]),
        ("paper", 24, 12, [1, 3, 5, 7, 9, 11, 14, 16, 18, 20, 22, 24]),
        ("uniform", 12, 4, [3, 6, 9, 12]),
        ("uniform", 12, 5, [2, 5, 7, 10, 12]),
        ("uniform", 6, 6, [1, 2, 3, 4, 5, 6]),
        ([2, 2, 6], 6, 3, [2, 2, 6]),
    ],
)
def test_layer_maps(spec, teacher, student, expected):
    assert resolve_layer_map(spec, teacher, student) == expected


@pytest.mark.parametrize(
    ("spec", "teacher", "student", "match"),
    [
        ("paper", 12, 4, "teacher layers == 2 x student layers"),
        ("uniform", 3, 6, "student layers <= teacher layers"),
        ("diagonal", 6, 3, "must be 'paper', 'uniform'"),
        ([1, 4], 6, 3, "has 2 entries, but the student has 3"),
        ([0, 4, 6], 6, 3, "0 is not a layer"),
        ([1, 4, 7], 6, 3, "7 is not a layer"),
        ([1, 4, True], 6, 3, "True is not a layer"),
    ],
)
def test_layer_map_errors_name_the_field(spec, teacher, student, match):
    with pytest.raises(ConfigError, match=match) as err:
        resolve_layer_map(spec, teacher, student, field="method.layer_map")
    assert "method.layer_map" in str(err.value)
