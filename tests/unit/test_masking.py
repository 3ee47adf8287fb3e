"""MLM masking: selection rate, the 80/10/10 split, exclusions, determinism and frequency weights."""

from __future__ import annotations

import datasets
import pytest
import torch

from distil.adapters.masking import mask_tokens, token_frequency_weights
from distil.errors import ConfigError, DataError
from factories import tiny_tokenizer

TOK = tiny_tokenizer()
SPECIAL = torch.tensor(sorted(TOK.all_special_ids))


def _batch(rows: int = 256, width: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-special ids in [CLS] ... [SEP] rows; every other row padded from position 100."""
    g = torch.Generator().manual_seed(seed)
    ordinary = torch.tensor([i for i in range(len(TOK)) if i not in SPECIAL.tolist()])
    ids = ordinary[torch.randint(len(ordinary), (rows, width), generator=g)]
    ids[:, 0], ids[:, -1] = TOK.cls_token_id, TOK.sep_token_id
    ids[::7, 50] = TOK.unk_token_id
    mask = torch.ones_like(ids)
    mask[::2, 100:] = 0
    ids[::2, 100:] = TOK.pad_token_id
    ids[::2, 99] = TOK.sep_token_id
    return ids, mask


def _mask(ids: torch.Tensor, mask: torch.Tensor, seed: int = 1, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    return mask_tokens(ids, mask, TOK, generator=torch.Generator().manual_seed(seed), **kw)


def test_selection_rate_and_80_10_10_split() -> None:
    ids, mask = _batch()
    masked, labels = _mask(ids, mask)
    maskable = mask.bool() & ~torch.isin(ids, SPECIAL)
    selected = labels != -100
    assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01
    # The count is drawn per row, so every row is close to 15%, not just the batch.
    per_row = selected.sum(1) / maskable.sum(1)
    assert (per_row - 0.15).abs().max() < 0.02
    n = selected.sum()
    as_mask = (masked[selected] == TOK.mask_token_id).sum() / n
    kept = (masked[selected] == ids[selected]).sum() / n
    random = 1 - as_mask - kept
    assert abs(as_mask - 0.8) < 0.03 and abs(random - 0.1) < 0.025 and abs(kept - 0.1) < 0.025
    replaced = selected & (masked != TOK.mask_token_id) & (masked != ids)
    assert not torch.isin(masked[replaced], SPECIAL).any()


def test_special_tokens_and_padding_are_never_selected() -> None:
    ids, mask = _batch()
    for seed in range(3):
        masked, labels = _mask(ids, mask, seed)
        protected = ~mask.bool() | torch.isin(ids, SPECIAL)
        assert (labels[protected] == -100).all()
        assert torch.equal(masked[protected], ids[protected])
        selected = labels != -100
        assert torch.equal(labels[selected], ids[selected])
        assert torch.equal(masked[~selected], ids[~selected])
        assert masked.dtype == labels.dtype == torch.long


def test_deterministic_given_the_generator() -> None:
    ids, mask = _batch(rows=16)
    first, second, other = _mask(ids, mask, 7), _mask(ids, mask, 7), _mask(ids, mask, 8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])
    weights = torch.rand(len(TOK))
    assert torch.equal(
        _mask(ids, mask, 7, token_weights=weights)[1], _mask(ids, mask, 7, token_weights=weights)[1]
    )


def test_token_weights_favour_rare_tokens() -> None:
    # Token 20 fills ~98% of each row and token 21 the rest: weights counts^-0.7 must mask 21 far more often.
    g = torch.Generator().manual_seed(0)
    ids = torch.where(torch.rand(128, 64, generator=g) < 0.98, 20, 21)
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    weights = token_frequency_weights(ds, len(TOK))
    counts = torch.bincount(ids.flatten(), minlength=len(TOK)).clamp_min(1).double()
    assert torch.allclose(weights, (counts**-0.7).float())
    mask = torch.ones_like(ids)
    plain = _mask(ids, mask)[1] != -100
    smoothed = _mask(ids, mask, token_weights=weights)[1] != -100
    rate = lambda sel, t: (sel & (ids == t)).sum() / (ids == t).sum()  # noqa: E731
    assert abs(rate(plain, 21) - 0.15) < 0.1 and rate(smoothed, 21) > 0.6 > 0.15 > rate(smoothed, 20)
    # How many are masked does not change, only which.
    assert abs(smoothed.float().mean() - 0.15) < 0.005 and abs(plain.float().mean() - 0.15) < 0.005
    zero = weights.clone()
    zero[21] = 0
    assert not ((_mask(ids, mask, token_weights=zero)[1] != -100) & (ids == 21)).any()


def test_token_frequency_weights_reads_selections_and_clamps() -> None:
    ds = datasets.Dataset.from_dict({"input_ids": [[5, 5, 6], [7], [5, 5]]}).select([0, 2])
    weights = token_frequency_weights(ds, 10, power=-1.0)
    assert weights.tolist() == pytest.approx([1, 1, 1, 1, 1, 0.25, 1, 1, 1, 1])
    with pytest.raises(DataError, match="outside the vocabulary"):
        token_frequency_weights(ds, 6)
    with pytest.raises(DataError, match="input_ids"):
        token_frequency_weights(datasets.Dataset.from_dict({"text": ["a"]}), 10)


def test_bad_inputs() -> None:
    ids, mask = _batch(rows=2)
    no_mask = tiny_tokenizer()
    no_mask.mask_token = None
    with pytest.raises(ConfigError, match="mask token.*next-token"):
        mask_tokens(ids, mask, no_mask)
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(ids, mask, TOK, mlm_probability=0.0)
    with pytest.raises(ValueError, match="attention_mask"):
        mask_tokens(ids, mask[:, :5], TOK)
    with pytest.raises(ValueError, match="token_weights"):
        mask_tokens(ids, mask, TOK, token_weights=torch.ones(10))
    with pytest.raises(ValueError, match="non-negative"):
        mask_tokens(ids, mask, TOK, token_weights=-torch.ones(len(TOK)))
