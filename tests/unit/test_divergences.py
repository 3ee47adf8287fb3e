"""The divergence family: values worked out by hand, gradients equal to plain autograd, masks, chunking."""

from __future__ import annotations

import math

import pytest
import torch

import distil.losses.divergences as div
from distil.losses import kd_kl
from distil.losses.divergences import DIVERGENCES, _rows_divergence, divergence

# Teacher p = [0.5, 0.5] (equal logits), student q = [0.25, 0.75] (logits 0 and ln 3).
P, Q = (0.5, 0.5), (0.25, 0.75)
TEACHER = torch.tensor([[0.0, 0.0]])
STUDENT = torch.tensor([[0.0, math.log(3.0)]])


def _kl(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def _mix(w: float) -> tuple[float, float]:
    """``w * p + (1 - w) * q``."""
    return (w * P[0] + (1 - w) * Q[0], w * P[1] + (1 - w) * Q[1])


HAND = {
    "forward_kl": 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),
    "reverse_kl": 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5),
    # beta = 0.5: m = (0.375, 0.625)
    "jsd": 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625))
    + 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)),
    # alpha = 0.1: KL(p || 0.1 p + 0.9 q), m = (0.275, 0.725)
    "skew_kl": 0.5 * math.log(0.5 / 0.275) + 0.5 * math.log(0.5 / 0.725),
    # alpha = 0.1: KL(q || 0.9 p + 0.1 q), m = (0.475, 0.525)
    "skew_reverse_kl": 0.25 * math.log(0.25 / 0.475) + 0.75 * math.log(0.75 / 0.525),
    "tv": 0.5 * (abs(0.5 - 0.25) + abs(0.5 - 0.75)),
}


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_values_worked_out_by_hand(kind: str) -> None:
    assert set(HAND) == set(DIVERGENCES)
    got = divergence(STUDENT, TEACHER, kind, beta=0.5, alpha=0.1)
    assert got.item() == pytest.approx(HAND[kind], rel=1e-5)


def test_the_hand_values_are_the_definitions() -> None:
    # The mixtures above, through the helper rather than by hand, say the same.
    assert _kl(P, _mix(0.5)) == pytest.approx(0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625))
    assert _kl(P, _mix(0.1)) == pytest.approx(HAND["skew_kl"])
    assert _kl(Q, _mix(0.9)) == pytest.approx(HAND["skew_reverse_kl"])


def test_jsd_ends_are_forward_and_reverse_kl_and_its_middle_is_symmetric() -> None:
    s, t = torch.randn(4, 7), torch.randn(4, 7)
    torch.testing.assert_close(divergence(s, t, "jsd", beta=0.0), divergence(s, t, "forward_kl"))
    torch.testing.assert_close(divergence(s, t, "jsd", beta=1.0), divergence(s, t, "reverse_kl"))
    torch.testing.assert_close(divergence(s, t, "jsd", beta=0.5), divergence(t, s, "jsd", beta=0.5))
    torch.testing.assert_close(divergence(s, t, "reverse_kl"), divergence(t, s, "forward_kl"))


def test_forward_kl_is_kd_kl_in_value_and_gradient() -> None:
    s, t = torch.randn(2, 5, 11, requires_grad=True), torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ours = divergence(s, t, "forward_kl", temperature=2.0, mask=mask)
    (g_ours,) = torch.autograd.grad(ours, s)
    theirs = kd_kl(s, t, 2.0, mask)
    (g_theirs,) = torch.autograd.grad(theirs, s)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_chunked_value_and_gradient_equal_plain_autograd(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(div, "_CHUNK_ELEMENTS", 3 * 13)  # three rows of 13 classes per chunk
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 6, 13, generator=gen, requires_grad=True)
    t = torch.randn(2, 6, 13, generator=gen)
    mask = torch.ones(2, 6)
    mask[0, 4:] = 0
    got = divergence(s, t, kind, temperature=1.5, mask=mask, beta=0.3, alpha=0.2)
    (g_got,) = torch.autograd.grad(got, s)
    rows = mask.reshape(-1).bool()
    coefficient = 0.3 if kind == "jsd" else 0.2
    flat = s.reshape(-1, 13)[rows] / 1.5
    direct = _rows_divergence(kind, flat, t.reshape(-1, 13)[rows] / 1.5, coefficient).mean() * 1.5**2
    (g_direct,) = torch.autograd.grad(direct, s)
    torch.testing.assert_close(got, direct)
    torch.testing.assert_close(g_got, g_direct)
    assert g_got[0, 4:].abs().sum() == 0  # masked rows get no gradient


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_zero_on_identical_positive_otherwise_teacher_untouched(kind: str) -> None:
    s = torch.randn(3, 9, requires_grad=True)
    t = torch.randn(3, 9, requires_grad=True)
    assert divergence(s, s.detach().clone(), kind).abs().item() < 1e-6
    loss = divergence(s, t, kind)
    assert loss.item() > 0
    loss.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_masked_out_padding_is_never_read(kind: str) -> None:
    s, t = torch.randn(1, 4, 6, requires_grad=True), torch.randn(1, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0]])
    with torch.no_grad():
        s_pad, t_pad = s.clone(), t.clone()
        s_pad[0, 2:], t_pad[0, 2:] = float("nan"), float("inf")
    s_pad.requires_grad_(True)
    loss = divergence(s_pad, t_pad, kind, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s_pad.grad).all()
    torch.testing.assert_close(loss, divergence(s[:, :2], t[:, :2], kind))
    assert divergence(s, t, kind, mask=torch.zeros(1, 4)).item() == 0.0


def test_bad_arguments_are_refused() -> None:
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="Unknown divergence"):
        divergence(s, s, "kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        divergence(s, s, "jsd", beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        divergence(s, s, "skew_kl", alpha=0.0)
    with pytest.raises(ValueError, match="student"):
        divergence(s, torch.randn(2, 4))


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_a_class_both_models_rule_out_keeps_value_and_gradient_finite(kind: str) -> None:
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    s[:, -1], t[:, -1] = float("-inf"), float("-inf")  # e.g. a padded vocabulary entry
    s.requires_grad_(True)
    loss = divergence(s, t, kind, beta=0.4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad[:, :-1]).all()
    torch.testing.assert_close(loss, divergence(s.detach()[:, :-1], t[:, :-1], kind, beta=0.4))
