"""Logit losses: reference values, closed forms, masking, precision and gradient flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import distil.losses
import distil.losses.topk
from distil.losses import kd_kl, logit_mse, task_loss, token_cross_entropy


def _pair(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape) * 3, torch.randn(*shape) * 3


def _explicit_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 / B * sum_b sum_c p_t log(p_t / p_s), written out term by term."""
    total = torch.tensor(0.0, dtype=torch.float64)
    for s_row, t_row in zip(s.double(), t.double(), strict=True):
        p_t = torch.exp(t_row / temperature) / torch.exp(t_row / temperature).sum()
        p_s = torch.exp(s_row / temperature) / torch.exp(s_row / temperature).sum()
        total = total + (p_t * torch.log(p_t / p_s)).sum()
    return temperature**2 * total / s.shape[0]


def test_package_reexports() -> None:
    assert distil.losses.kd_kl is kd_kl
    assert set(distil.losses.__all__) >= {"kd_kl", "logit_mse", "task_loss"}


def test_kd_equals_torch_kl_div_at_t1() -> None:
    s, t = _pair(8, 5)
    expected = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    torch.testing.assert_close(kd_kl(s, t), expected)


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_kd_temperature_closed_form(temperature: float) -> None:
    s, t = _pair(6, 7)
    expected = _explicit_kd(s, t, temperature).float()
    torch.testing.assert_close(kd_kl(s, t, temperature), expected, rtol=1e-5, atol=1e-6)


def test_kd_zero_on_identical_and_positive_otherwise() -> None:
    s, t = _pair(4, 9)
    assert kd_kl(s, s.clone(), 2.0).abs().item() < 1e-6
    assert kd_kl(s, t, 2.0).item() > 0


def test_kd_gradient_only_to_student() -> None:
    s, t = _pair(4, 3)
    s.requires_grad_(True)
    t.requires_grad_(True)
    kd_kl(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_token_level_mask_averages_kept_positions_and_ignores_padding() -> None:
    s, t = _pair(2, 4, 11)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    keep = mask.bool()
    expected = F.kl_div(F.log_softmax(s[keep] / 2, -1), F.softmax(t[keep] / 2, -1), reduction="batchmean") * (
        2**2
    )
    torch.testing.assert_close(kd_kl(s, t, 2.0, mask=mask), expected)

    s_pad, t_pad = s.clone(), t.clone()
    s_pad[~keep] = float("nan")
    t_pad[~keep] = 1e4
    s_pad.requires_grad_(True)
    loss = kd_kl(s_pad, t_pad, 2.0, mask=mask)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(s_pad.grad).all()
    assert (s_pad.grad[~keep] == 0).all()


def test_kd_unmasked_3d_averages_over_all_positions() -> None:
    s, t = _pair(2, 3, 5)
    torch.testing.assert_close(kd_kl(s, t), kd_kl(s.reshape(6, 5), t.reshape(6, 5)))


def test_kd_all_masked_is_zero_with_graph() -> None:
    s, t = _pair(2, 3, 5)
    s.requires_grad_(True)
    loss = kd_kl(s, t, 2.0, mask=torch.zeros(2, 3))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert (s.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kd_low_precision_inputs_computed_in_float32(dtype: torch.dtype) -> None:
    s, t = _pair(4, 6)
    s_low, t_low = s.to(dtype), t.to(dtype)
    loss = kd_kl(s_low, t_low, 2.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, kd_kl(s_low.float(), t_low.float(), 2.0))


def test_kd_rejects_bad_inputs() -> None:
    s, t = _pair(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_kl(s, t, 0.0)
    with pytest.raises(ValueError):
        kd_kl(s, t[:, :2])
    with pytest.raises(ValueError, match="mask"):
        kd_kl(s, t, mask=torch.ones(3))


def test_logit_mse_mean_and_detached_teacher() -> None:
    s, t = _pair(5, 1)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = logit_mse(s, t)
    torch.testing.assert_close(loss, ((s - t) ** 2).mean())
    loss.backward()
    assert t.grad is None
    assert logit_mse(s.half(), t.half()).dtype == torch.float32


def test_task_loss_classification() -> None:
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(
        task_loss(logits, labels, is_regression=False), F.cross_entropy(logits, labels)
    )


@pytest.mark.parametrize("ignored", [False, True])
def test_token_cross_entropy_by_hand(ignored: bool) -> None:
    """Mean of -log softmax at the label over scored positions; every row scored or some ignored (-100)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, requires_grad=True)
    labels = torch.tensor([[1, 6, 0], [3, 3, 5]])
    if ignored:
        labels[0, 1] = labels[1, 2] = -100
    keep = labels != -100
    logp = logits.detach().log_softmax(-1)
    want = -logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep].mean()
    got = token_cross_entropy(logits, labels)
    torch.testing.assert_close(got, want)
    got.backward()
    assert logits.grad is not None
    onehot = F.one_hot(labels.clamp_min(0), 7).float()
    grad = (logp.exp() - onehot) * keep.unsqueeze(-1) / keep.sum()  # softmax - one-hot, scored rows only
    torch.testing.assert_close(logits.grad, grad)
    assert token_cross_entropy(logits, torch.full_like(labels, -100)).item() == 0.0


def test_task_loss_regression_squeezes_single_output() -> None:
    out, target = torch.randn(4, 1), torch.randn(4)
    loss = task_loss(out, target, is_regression=True)
    assert loss.shape == ()
    torch.testing.assert_close(loss, ((out[:, 0] - target) ** 2).mean())


def _direct_kd(s: torch.Tensor, t: torch.Tensor, temperature: float, mask: torch.Tensor) -> torch.Tensor:
    """The plain computation: every float32 probability of every kept row at once."""
    keep = mask.reshape(-1).bool()
    s2, t2 = s.reshape(-1, s.shape[-1])[keep].float(), t.reshape(-1, t.shape[-1])[keep].float()
    p_t = F.softmax(t2 / temperature, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s2 / temperature, -1))).sum(-1).mean()
    return kl * temperature**2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_token_kd_equals_the_direct_computation(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(distil.losses.logits, "_CHUNK_ELEMENTS", 3 * 50)  # 3 rows per chunk: many chunks
    torch.manual_seed(0)
    s = (torch.randn(2, 7, 50) * 3).to(dtype).requires_grad_(True)
    t = (torch.randn(2, 7, 50) * 3).to(dtype)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    chunked = kd_kl(s, t, 2.0, mask)
    (g_chunked,) = torch.autograd.grad(chunked, s)
    direct = _direct_kd(s, t, 2.0, mask)
    (g_direct,) = torch.autograd.grad(direct, s)
    torch.testing.assert_close(chunked, direct, rtol=1e-6, atol=1e-6)
    tol = 1e-7 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(g_chunked.float(), g_direct.float(), rtol=tol, atol=tol)
    assert g_chunked.dtype == dtype and g_chunked[1, 4:].abs().sum() == 0  # masked rows get no gradient


def _topk(t: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the cache keeps: top-k logits and the log-mass of the rest (-inf when nothing is left)."""
    values, index = t.topk(k, dim=-1)
    rest = torch.logsumexp(t.scatter(-1, index, float("-inf")), dim=-1)
    return index, values, rest


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_kd_with_k_equal_to_the_vocabulary_is_the_full_kd(monkeypatch, temperature):
    from distil.losses.topk import topk_kd_kl

    monkeypatch.setattr(distil.losses.logits, "_CHUNK_ELEMENTS", 3 * 50)
    monkeypatch.setattr(distil.losses.topk, "_CHUNK_ELEMENTS", 3 * 50)
    torch.manual_seed(1)
    s = (torch.randn(2, 7, 50) * 3).requires_grad_(True)
    t = torch.randn(2, 7, 50) * 3
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    full = kd_kl(s, t, temperature, mask)
    (g_full,) = torch.autograd.grad(full, s)
    top = topk_kd_kl(s, *_topk(t, 50), temperature, mask)
    (g_top,) = torch.autograd.grad(top, s)
    torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_top, g_full, rtol=1e-5, atol=1e-7)
    assert g_top[0, 5:].abs().sum() == 0


def test_topk_kd_is_the_kl_over_the_top_tokens_and_the_rest_and_never_above_the_full_kl(monkeypatch):
    from distil.losses.topk import topk_kd_kl

    monkeypatch.setattr(distil.losses.topk, "_CHUNK_ELEMENTS", 2 * 40)
    torch.manual_seed(2)
    s = (torch.randn(3, 5, 40) * 2).requires_grad_(True)
    t = torch.randn(3, 5, 40) * 2
    index, values, rest = _topk(t, 6)
    value = topk_kd_kl(s, index, values, rest, 1.0)
    (grad,) = torch.autograd.grad(value, s)
    # Directly: merge everything outside the top 6 into one outcome on both sides.
    p = F.softmax(t, -1)
    q = F.softmax(s, -1)
    p_top, q_top = p.gather(-1, index), q.gather(-1, index)
    p_coarse = torch.cat([p_top, 1 - p_top.sum(-1, keepdim=True)], -1)
    q_coarse = torch.cat([q_top, 1 - q_top.sum(-1, keepdim=True)], -1)
    direct = (p_coarse * (p_coarse.log() - q_coarse.log())).sum(-1).mean()
    (direct_grad,) = torch.autograd.grad(direct, s)
    torch.testing.assert_close(value, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, direct_grad, rtol=1e-4, atol=1e-7)
    assert float(value.detach()) <= float(kd_kl(s.detach(), t, 1.0)) + 1e-6


def test_topk_kd_at_a_temperature_is_the_kl_of_the_tempered_distributions_coarsened(monkeypatch):
    """The cache keeps the tail's log-mass at the loss temperature; the loss is then exact for T != 1."""
    from distil.losses.topk import topk_kd_kl

    monkeypatch.setattr(distil.losses.topk, "_CHUNK_ELEMENTS", 2 * 40)
    torch.manual_seed(3)
    temperature = 2.0
    s = (torch.randn(2, 4, 40) * 2).requires_grad_(True)
    t = torch.randn(2, 4, 40) * 2
    values, index = t.topk(5, dim=-1)
    rest = torch.logsumexp(t.scatter(-1, index, float("-inf")) / temperature, dim=-1)
    value = topk_kd_kl(s, index, values, rest, temperature)
    (grad,) = torch.autograd.grad(value, s)
    p, q = F.softmax(t / temperature, -1), F.softmax(s / temperature, -1)
    p_top, q_top = p.gather(-1, index), q.gather(-1, index)
    p_coarse = torch.cat([p_top, 1 - p_top.sum(-1, keepdim=True)], -1)
    q_coarse = torch.cat([q_top, 1 - q_top.sum(-1, keepdim=True)], -1)
    direct = temperature**2 * (p_coarse * (p_coarse.log() - q_coarse.log())).sum(-1).mean()
    (direct_grad,) = torch.autograd.grad(direct, s)
    torch.testing.assert_close(value, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, direct_grad, rtol=1e-4, atol=1e-7)
    assert float(value.detach()) <= float(kd_kl(s.detach(), t, temperature)) + 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_attention_score_mse_by_hand_with_padding_and_infinite_dropped_scores(causal):
    from distil.losses import attention_score_mse

    torch.manual_seed(4)
    s = torch.randn(2, 2, 4, 4)
    t = torch.randn(2, 2, 4, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    s[0, :, :, 3] = float("-inf")  # TinyBERT-style masked scores of the padded key
    t[0, :, 3, :] = float("nan")  # whatever a padded query holds
    s = s.requires_grad_(True)
    value = attention_score_mse(s, t, mask, causal=causal)
    (grad,) = torch.autograd.grad(value, s)
    total, count, plain = 0.0, 0, s.detach()
    expected = torch.zeros_like(plain)
    for b in range(2):
        for q in range(4):
            for k in range(4):
                if not (mask[b, q] and mask[b, k]) or (causal and k > q):
                    continue
                for h in range(2):
                    total += float(plain[b, h, q, k] - t[b, h, q, k]) ** 2
                    expected[b, h, q, k] = 2 * (plain[b, h, q, k] - t[b, h, q, k])
                    count += 1
    torch.testing.assert_close(value, torch.tensor(total / count), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected / count, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(grad).all()
    half = s.detach().bfloat16().requires_grad_(True)
    low = attention_score_mse(half, t, mask, causal=causal)
    (low_grad,) = torch.autograd.grad(low, half)
    assert low.dtype == torch.float32 and low_grad.dtype == torch.bfloat16
    torch.testing.assert_close(low_grad.float(), grad, rtol=0.05, atol=1e-3)
