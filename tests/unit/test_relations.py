"""Relation losses (MiniLMv2, MiniLM v1) against a per-example loop; chunking, masking, precision, grads."""

from __future__ import annotations

import math

import pytest
import torch

import distil.losses
from distil.losses import attention_kl, relation_kl, relations, value_relation_kl
from distil.losses.relations import relation_chunks


def _loop_reference(
    sl: torch.Tensor,
    sr: torch.Tensor,
    tl: torch.Tensor,
    tr: torch.Tensor,
    mask: torch.Tensor,
    heads: int,
    causal: bool = False,
) -> torch.Tensor:
    """MiniLMv2 Eq. 6-8 written out: per example (cut to its real tokens), per relation head, in float64."""
    total = torch.tensor(0.0, dtype=torch.float64)
    for b in range(mask.shape[0]):
        real = mask[b].bool()
        n = int(real.sum())
        if n == 0:
            continue
        example = 0.0
        for a in range(heads):
            allowed = torch.ones(n, n).tril().bool() if causal else torch.ones(n, n).bool()
            log_relations = []
            for left, right in ((tl, tr), (sl, sr)):
                d = left.shape[-1] // heads
                x = left[b, real, a * d : (a + 1) * d].double()
                y = right[b, real, a * d : (a + 1) * d].double()
                logits = (x @ y.T / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
                log_relations.append(torch.log_softmax(logits, dim=-1))
            log_t, log_s = log_relations
            # Only the allowed (finite) entries enter the sum, so no 0 * inf reaches value or gradient.
            example = example + (log_t.exp() * (log_t - log_s))[allowed].sum()
        total = total + example / (heads * n)
    return total / mask.shape[0]


def _inputs(
    batch: int = 3, seq: int = 7, d_s: int = 32, d_t: int = 48, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, seq, d_s, generator=g) * 2,
        torch.randn(batch, seq, d_s, generator=g) * 2,
        torch.randn(batch, seq, d_t, generator=g) * 2,
        torch.randn(batch, seq, d_t, generator=g) * 2,
    )


def _right_padded(lengths: list[int], seq: int) -> torch.Tensor:
    return (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()


def _to_left_padding(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Move each right-padded example's real tokens to the end of its row."""
    return torch.stack([torch.roll(x[b], x.shape[1] - n, dims=0) for b, n in enumerate(lengths)])


LENGTHS = [7, 4, 1]


def test_package_reexports() -> None:
    assert distil.losses.relation_kl is relation_kl
    assert {"relation_kl", "attention_kl", "value_relation_kl", "kd_kl"} <= set(distil.losses.__all__)


@pytest.mark.parametrize("heads", [4, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_per_example_loop(heads: int, causal: bool) -> None:
    # 32 and 48 wide, so the relation heads (4, 8) match no attention-head layout of either model.
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    expected = _loop_reference(sl, sr, tl, tr, mask, heads, causal).float()
    loss = relation_kl(sl, sr, tl, tr, mask, heads, causal=causal)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_same_tensor_twice_is_the_qq_relation() -> None:
    sl, _, tl, _ = _inputs()
    mask = _right_padded(LENGTHS, 7)
    expected = _loop_reference(sl, sl, tl, tl, mask, 4).float()
    torch.testing.assert_close(relation_kl(sl, sl, tl, tl, mask, 4), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("head_chunk", "row_chunk"), [(1, None), (3, 2), (None, 1), (5, 3), (8, 7), (2, 4)])
def test_chunked_equals_direct_in_value_and_gradient(
    causal: bool, head_chunk: int | None, row_chunk: int | None
) -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)

    def run(hc: int | None, rc: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = sl.clone().requires_grad_(True), sr.clone().requires_grad_(True)
        loss = relation_kl(a, b, tl, tr, mask, 8, causal=causal, head_chunk=hc, row_chunk=rc)
        loss.backward()
        return loss.detach(), a.grad, b.grad

    direct = run(8, 7)
    chunked = run(head_chunk, row_chunk)
    torch.testing.assert_close(chunked[0], direct[0], rtol=1e-6, atol=0)
    for got, want in zip(chunked[1:], direct[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_default_chunk_sizes_follow_the_memory_budget() -> None:
    # One float32 [B, h, rows, S] tensor must stay under 64 MiB (16 Mi elements) here.
    mib64 = 64 * 2**20
    assert relation_chunks(1, 1100, 16, None, None, mib64) == (13, 1100)  # 1.2 Mi elements per head
    assert relation_chunks(8, 512, 48, None, None, mib64) == (8, 512)
    assert relation_chunks(64, 2048, 48, None, None, mib64) == (1, 128)  # one head is too big: slice rows
    assert relation_chunks(8, 512, 48, 48, None, mib64) == (48, 85)
    assert relation_chunks(8, 512, 48, None, 64, mib64) == (48, 64)
    # The default budget (256 MiB): the whole relation is one chunk when it fits, as at the floor
    # benchmark's 32 x 128 with 48 heads (96 MiB), and chunks only as far as needed when it does not.
    assert relation_chunks(32, 128, 48) == (48, 128)
    assert relation_chunks(32, 512, 48) == (8, 512)  # 1.5 GiB whole: 6 chunks of 256 MiB
    with pytest.raises(ValueError, match="chunk_bytes"):
        relation_chunks(32, 128, 48, chunk_bytes=0)
    with pytest.raises(ValueError, match="head_chunk"):
        relation_kl(*_inputs(), _right_padded(LENGTHS, 7), 4, head_chunk=0)


@pytest.mark.parametrize(("budget_elements", "sizes"), [(3 * 7 * 7 * 2, (2, 7)), (3 * 7 * 6, (1, 6))])
def test_automatic_chunking_agrees_with_direct(budget_elements: int, sizes: tuple[int, int]) -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    # A tiny budget forces the automatic path into several (checkpointed) chunks of heads, then of rows.
    assert relation_chunks(3, 7, 8, None, None, 4 * budget_elements) == sizes
    a = sl.clone().requires_grad_(True)
    auto = relation_kl(a, sr, tl, tr, mask, 8, causal=True, chunk_bytes=4 * budget_elements)
    auto.backward()
    b = sl.clone().requires_grad_(True)
    direct = relation_kl(b, sr, tl, tr, mask, 8, causal=True, head_chunk=8, row_chunk=7)
    direct.backward()
    torch.testing.assert_close(auto, direct, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_zero_for_identical_and_positive_otherwise() -> None:
    sl, sr, tl, tr = _inputs(d_s=48)
    mask = _right_padded(LENGTHS, 7)
    assert relation_kl(sl, sr, sl.clone(), sr.clone(), mask, 6).abs().item() < 1e-6
    assert relation_kl(sl, sl, sl.clone(), sl.clone(), mask, 6, causal=True).abs().item() < 1e-6
    assert relation_kl(sl, sr, tl, tr, mask, 6).item() > 0


def test_invariant_to_extra_padding_holding_garbage() -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    base = relation_kl(sl, sr, tl, tr, mask, 4)

    def pad(x: torch.Tensor, fill: float) -> torch.Tensor:
        x = x.clone()
        x[~mask.bool()] = fill  # garbage inside the existing padding too
        return torch.cat([x, torch.full((x.shape[0], 5, x.shape[2]), fill)], dim=1)

    wide_mask = torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], dim=1)
    student = pad(sl, float("nan")).requires_grad_(True)
    loss = relation_kl(student, pad(sr, 1e30), pad(tl, float("inf")), pad(tr, -7.0), wide_mask, 4)
    torch.testing.assert_close(loss, base, rtol=1e-6, atol=1e-7)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[~wide_mask.bool()] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_left_and_right_padding_agree(causal: bool) -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    right = relation_kl(sl, sr, tl, tr, mask, 8, causal=causal)
    left_inputs = [_to_left_padding(x, LENGTHS) for x in (sl, sr, tl, tr)]
    left_mask = _to_left_padding(mask, LENGTHS)
    assert left_mask[2].tolist() == [0, 0, 0, 0, 0, 0, 1]
    left = relation_kl(*left_inputs, left_mask, 8, causal=causal, row_chunk=3)
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-7)
    expected = _loop_reference(*left_inputs, left_mask, 8, causal).float()
    torch.testing.assert_close(left, expected, rtol=1e-5, atol=1e-6)


def test_mask_with_holes_matches_loop() -> None:
    sl, sr, tl, tr = _inputs()
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    expected = _loop_reference(sl, sr, tl, tr, mask, 4, causal=True).float()
    torch.testing.assert_close(
        relation_kl(sl, sr, tl, tr, mask, 4, causal=True), expected, rtol=1e-5, atol=1e-6
    )


def test_causal_differs_from_bidirectional() -> None:
    sl, sr, tl, tr = _inputs()
    mask = torch.ones(3, 7)
    assert not torch.allclose(
        relation_kl(sl, sr, tl, tr, mask, 4), relation_kl(sl, sr, tl, tr, mask, 4, causal=True)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_autocast_computed_in_float32(dtype: torch.dtype) -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    low = [x.to(dtype) for x in (sl, sr, tl, tr)]
    full = relation_kl(*[x.float() for x in low], mask, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_low = relation_kl(*low, mask, 4, head_chunk=1)
        from_fp32 = relation_kl(sl, sr, tl, tr, mask, 4, head_chunk=1)
    assert from_low.dtype == torch.float32 and from_fp32.dtype == torch.float32
    torch.testing.assert_close(from_low, full, rtol=1e-6, atol=1e-7)
    # fp32 inputs under autocast must not be silently computed in bf16.
    torch.testing.assert_close(from_fp32, relation_kl(sl, sr, tl, tr, mask, 4), rtol=1e-6, atol=1e-7)
    student = low[0].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        relation_kl(student, low[1], low[2], low[3], mask, 4).backward()
    assert student.grad.dtype == dtype and torch.isfinite(student.grad).all()


def test_gradient_flows_to_student_only() -> None:
    sl, sr, tl, tr = (x.requires_grad_(True) for x in _inputs())
    mask = _right_padded(LENGTHS, 7)
    relation_kl(sl, sr, tl, tr, mask, 4, head_chunk=1, row_chunk=3).backward()
    assert sl.grad is not None and sl.grad.abs().sum() > 0
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert tl.grad is None and tr.grad is None


@pytest.mark.parametrize("causal", [False, True])
def test_gradient_matches_loop_reference(causal: bool) -> None:
    sl, sr, tl, tr = _inputs()
    mask = _to_left_padding(_right_padded(LENGTHS, 7), LENGTHS)
    a, b = sl.clone().requires_grad_(True), sr.clone().requires_grad_(True)
    (3.0 * relation_kl(a, b, tl, tr, mask, 4, causal=causal, head_chunk=3, row_chunk=2)).backward()
    a64, b64 = sl.double().requires_grad_(True), sr.double().requires_grad_(True)
    (3.0 * _loop_reference(a64, b64, tl, tr, mask, 4, causal)).backward()
    torch.testing.assert_close(a.grad, a64.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b.grad, b64.grad.float(), rtol=1e-4, atol=1e-6)


def test_qq_gradient_matches_loop_reference() -> None:
    sl, _, tl, _ = _inputs()
    mask = _right_padded(LENGTHS, 7)
    a = sl.clone().requires_grad_(True)
    relation_kl(a, a, tl, tl, mask, 8, row_chunk=3).backward()
    a64 = sl.double().requires_grad_(True)
    _loop_reference(a64, a64, tl, tl, mask, 8).backward()
    torch.testing.assert_close(a.grad, a64.grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_gradient_equals_autograd_and_checkpoint(causal: bool) -> None:
    # relation_kl forms its gradient in closed form; plain autograd (and checkpointed autograd) through
    # the same chunks must agree with it.
    sl, sr, tl, tr = _inputs()
    mask = _to_left_padding(_right_padded(LENGTHS, 7), LENGTHS)
    results = {}
    for mode in ("fused", "checkpoint", "autograd"):
        a, b = sl.clone().requires_grad_(True), sr.clone().requires_grad_(True)
        loss = relations._relation_kl(
            a, b, tl, tr, mask, 8, causal=causal, head_chunk=3, row_chunk=4, backward=mode
        )
        (loss * 2.5).backward()
        results[mode] = (loss.detach(), a.grad, b.grad)
    for mode in ("checkpoint", "autograd"):
        for got, want in zip(results["fused"], results[mode], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_gradient_to_one_side_only_and_no_grad_mode() -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded(LENGTHS, 7)
    b = sr.clone().requires_grad_(True)
    relation_kl(sl, b, tl, tr, mask, 4).backward()
    b64 = sr.double().requires_grad_(True)
    _loop_reference(sl, b64, tl, tr, mask, 4).backward()
    torch.testing.assert_close(b.grad, b64.grad.float(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        value = relation_kl(sl.requires_grad_(True), sr, tl, tr, mask, 4)
    assert not value.requires_grad
    torch.testing.assert_close(value, relation_kl(sl.detach(), sr, tl, tr, mask, 4))


def test_heads_must_divide_both_hidden_sizes() -> None:
    sl, sr, tl, tr = _inputs(d_s=32, d_t=48)
    mask = _right_padded(LENGTHS, 7)
    with pytest.raises(ValueError, match=r"num_relation_heads=12.*32.*48"):
        relation_kl(sl, sr, tl, tr, mask, 12)
    with pytest.raises(ValueError, match="mask"):
        relation_kl(sl, sr, tl, tr, mask[:, :5], 4)
    with pytest.raises(ValueError, match="student"):
        relation_kl(sl, sr[..., :16], tl, tr, mask, 4)


def test_all_masked_is_zero_with_graph() -> None:
    sl, sr, tl, tr = _inputs()
    sl.requires_grad_(True)
    loss = relation_kl(sl, sr, tl, tr, torch.zeros(3, 7), 4, causal=True, head_chunk=1, row_chunk=2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(sl.grad).all() and (sl.grad == 0).all()


def test_empty_sequence_contributes_zero_to_batch_mean() -> None:
    sl, sr, tl, tr = _inputs()
    mask = _right_padded([7, 4, 0], 7)
    loss = relation_kl(sl, sr, tl, tr, mask, 4)
    assert torch.isfinite(loss)
    two = relation_kl(sl[:2], sr[:2], tl[:2], tr[:2], mask[:2], 4)
    torch.testing.assert_close(loss, two * 2 / 3)


def _attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    b, s, width = q.shape
    d = width // heads
    qh, kh = (x.view(b, s, heads, d).transpose(1, 2) for x in (q, k))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    return torch.softmax(scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf")), dim=-1)


def test_attention_kl_is_kl_of_attention_distributions() -> None:
    sq, sk, tq, tk = _inputs(d_s=24, d_t=48)
    mask = _right_padded(LENGTHS, 7)
    p_s, p_t = _attention_probs(sq, sk, mask, 6), _attention_probs(tq, tk, mask, 6)
    kl = torch.where(p_t > 0, p_t * (p_t.log() - p_s.log()), 0.0).sum(-1)  # [B, H, S]
    rows = kl.masked_fill(~mask.bool()[:, None, :], 0.0).sum(dim=(1, 2))
    expected = (rows / (6 * mask.sum(-1))).mean()
    torch.testing.assert_close(attention_kl(sq, sk, tq, tk, mask, 6, 6), expected, rtol=1e-5, atol=1e-6)


def test_attention_kl_repeats_grouped_key_heads() -> None:
    sq, _, tq, tk = _inputs(d_s=32, d_t=64)
    sk_grouped = torch.randn(3, 7, 16)  # 2 key heads of size 8 shared by 4 query heads
    mask = _right_padded(LENGTHS, 7)
    repeated = sk_grouped.view(3, 7, 2, 1, 8).expand(3, 7, 2, 2, 8).reshape(3, 7, 32)
    torch.testing.assert_close(
        attention_kl(sq, sk_grouped, tq, tk, mask, 4, 4, causal=True),
        attention_kl(sq, repeated, tq, tk, mask, 4, 4, causal=True),
    )


def test_value_relation_is_vv_relation_with_attention_heads() -> None:
    sv, _, tv, _ = _inputs()
    mask = _right_padded(LENGTHS, 7)
    torch.testing.assert_close(
        value_relation_kl(sv, tv, mask, 4, 4),
        _loop_reference(sv, sv, tv, tv, mask, 4).float(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_minilm_v1_rejects_different_head_counts() -> None:
    sq, sk, tq, tk = _inputs(d_s=32, d_t=48)
    mask = _right_padded(LENGTHS, 7)
    with pytest.raises(ValueError, match="MiniLMv2"):
        attention_kl(sq, sk, tq, tk, mask, 4, 6)
    with pytest.raises(ValueError, match="MiniLMv2"):
        value_relation_kl(sq, tq, mask, 4, 6)
