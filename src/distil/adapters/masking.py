"""BERT-style dynamic masking for masked-language-model objectives, and the MLM batch plumbing.

Used by every method that corrupts its inputs with masks (DistilBERT-style, HomoDistil on a corpus):
`mask_batch` masks a `distil.types.Batch` and records what the MLM head must score; `head_rows` aligns
labels with the logits of a head that ran only at those positions.

Each call draws a fresh mask: per sequence, a share ``mlm_probability`` of the maskable tokens (real tokens
that are not special tokens) is selected; of those, 80% become ``[MASK]``, 10% a random non-special token
and 10% stay unchanged (Devlin et al., 2019). Optional token weights bias *which* tokens are selected,
as in XLM/DistilBERT's ``counts^-0.7`` smoothing, without changing *how many*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from distil.errors import ConfigError, DataError
from distil.types import Batch

if TYPE_CHECKING:  # only for annotations
    from transformers import PreTrainedTokenizerBase

__all__ = ["head_rows", "mask_batch", "mask_tokens", "token_frequency_weights"]

IGNORE_INDEX = -100  # labels of unselected positions; the default ignore_index of F.cross_entropy


def _select(
    weight: torch.Tensor, maskable: torch.Tensor, mlm_probability: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick positions per row: a stochastically rounded count, drawn without replacement by weight."""
    device = generator.device if generator is not None else weight.device
    round_u = torch.rand(weight.shape[:-1], generator=generator, device=device).to(weight.device)
    key_u = torch.rand(weight.shape, generator=generator, device=device).to(weight.device)
    eligible = weight > 0
    # floor(p*n) plus one more with probability frac(p*n): the expected count is exactly p*n per row.
    target = mlm_probability * maskable.sum(-1)
    count = torch.minimum(target.floor() + (round_u < target - target.floor()), eligible.sum(-1))
    # Gumbel top-k (Efraimidis & Spirakis): the k largest log(w) + Gumbel keys are a sample of k positions
    # without replacement where each successive draw picks a position with probability w / (sum of the rest).
    gumbel = -torch.log(-torch.log(key_u.clamp(torch.finfo(key_u.dtype).tiny, 1.0)))
    keys = torch.where(eligible, weight.clamp_min(1e-30).log() + gumbel, -torch.inf)
    rank = torch.empty_like(keys, dtype=torch.long)
    order = keys.argsort(dim=-1, descending=True)
    rank.scatter_(-1, order, torch.arange(keys.shape[-1], device=keys.device).expand_as(order).contiguous())
    return eligible & (rank < count.unsqueeze(-1))


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    *,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch for MLM: select tokens, then replace 80% with [MASK], 10% with a random token.

    Selection, per row: ``n`` = the row's maskable tokens (``attention_mask`` 1 and not one of
    ``tokenizer.all_special_ids``, so never [CLS]/[SEP]/[PAD]/[UNK]/[MASK]); ``k`` = ``mlm_probability * n``
    rounded down, plus 1 with probability equal to the fractional part, so ``E[k] = mlm_probability * n``
    exactly. Then ``k`` positions are drawn without replacement, each draw picking a remaining position
    with probability proportional to its token's weight (uniform without ``token_weights``). Weights thus
    shift selection toward rare tokens while the expected masked fraction of every row stays
    ``mlm_probability``; tokens of weight 0 are never selected (a row then masks at most its positively
    weighted tokens). Each selected position independently becomes [MASK] (p 0.8), a random token drawn
    uniformly from ``range(len(tokenizer))`` minus special tokens (p 0.1), or stays itself (p 0.1); a
    row may thus have no selected token (its labels all -100) when it is short.
    The result depends only on the inputs and ``generator`` (whose device draws the random numbers).

    Args:
        input_ids: ``(B, L)`` token ids.
        attention_mask: ``(B, L)``; 0 marks padding.
        tokenizer: The model's tokenizer (needs a mask token).
        mlm_probability: Expected share of maskable tokens selected, in (0, 1].
        generator: Random generator for reproducible masks; ``None`` uses torch's global generator.
        token_weights: ``(V,)`` non-negative selection weight per token id, e.g. from
            ``token_frequency_weights``; ``V`` must exceed every id in ``input_ids``.

    Returns:
        ``(masked_ids, labels)``, both ``(B, L)`` long: the ids after replacement, and the original ids at
        selected positions with -100 elsewhere.

    Raises:
        ConfigError: The tokenizer has no mask token.
        ValueError: Shapes, ``mlm_probability`` or ``token_weights`` are invalid.
    """
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ConfigError(
            f"Masked-LM distillation needs a tokenizer with a mask token; {tokenizer.name_or_path!r} has "
            "none. Decoders (GPT-2, Llama, ...) use a next-token loss instead."
        )
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1]; got {mlm_probability}.")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}."
        )
    input_ids = input_ids.long()
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long, device=input_ids.device)
    maskable = attention_mask.bool() & ~torch.isin(input_ids, special)
    if token_weights is None:
        weight = maskable.float()
    else:
        top = int(input_ids.max()) if input_ids.numel() else 0
        if token_weights.dim() != 1 or token_weights.numel() <= top:
            raise ValueError(
                f"token_weights must be 1-D and cover every id (up to {top}); got shape "
                f"{tuple(token_weights.shape)}. Size it to the vocabulary (token_frequency_weights)."
            )
        if bool((token_weights < 0).any()):
            raise ValueError("token_weights must be non-negative.")
        weight = token_weights.to(input_ids.device, torch.float32)[input_ids] * maskable
    selected = _select(weight, maskable, mlm_probability, generator)

    device = generator.device if generator is not None else input_ids.device
    action = torch.rand(input_ids.shape, generator=generator, device=device).to(input_ids.device)
    allowed = torch.ones(len(tokenizer), dtype=torch.bool, device=input_ids.device)
    allowed[special[special < len(tokenizer)]] = False
    choices = allowed.nonzero().squeeze(-1)
    pick = torch.randint(len(choices), input_ids.shape, generator=generator, device=device)
    masked = torch.where(selected & (action < 0.8), mask_id, input_ids)
    masked = torch.where(
        selected & (action >= 0.8) & (action < 0.9), choices[pick.to(input_ids.device)], masked
    )
    labels = torch.where(selected, input_ids, IGNORE_INDEX)
    return masked, labels


def token_frequency_weights(dataset: datasets.Dataset, vocab_size: int, power: float = -0.7) -> torch.Tensor:
    """Per-token selection weights ``max(count, 1) ** power`` from token counts over a corpus.

    With the default ``power=-0.7`` (XLM, DistilBERT) frequent tokens get small weights and rare tokens
    large ones, so ``mask_tokens`` masks rare tokens more often. Ids absent from the corpus count as seen
    once (DistilBERT's clamp): they get the largest weight, 1, rather than an infinite one. Special tokens
    are counted like any other; ``mask_tokens`` never selects them whatever their weight.

    Args:
        dataset: Rows with an ``input_ids`` list column (e.g. from ``build_blocks``); read in Arrow batches,
            so memory-mapped corpora are never loaded whole.
        vocab_size: Length of the returned tensor; every id must be below it.
        power: Exponent applied to the counts; 0 gives uniform weights.

    Returns:
        ``(vocab_size,)`` float32 weights.

    Raises:
        DataError: The dataset has no ``input_ids`` column or holds an id outside ``[0, vocab_size)``.
    """
    if "input_ids" not in dataset.column_names:
        raise DataError(f"token_frequency_weights needs an input_ids column; found {dataset.column_names}.")
    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=8192):
        ids = pc.list_flatten(batch["input_ids"]).to_numpy().astype(np.int64)
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise DataError(
                f"Token id {int(bad[0])} is outside the vocabulary of size {vocab_size}; "
                "pass the tokenizer's (or model's) full vocabulary size."
            )
        counts += np.bincount(ids, minlength=vocab_size)
    return torch.from_numpy(np.maximum(counts, 1).astype(np.float64) ** power).float()


def mask_batch(
    batch: Batch,
    tokenizer: PreTrainedTokenizerBase,
    *,
    mlm_probability: float,
    kl_everywhere: bool,
    token_weights: torch.Tensor | None = None,
) -> Batch:
    """Mask a batch for MLM (global RNG) and say where the language-model head must score.

    Args:
        batch: The clean batch.
        tokenizer: The run's tokenizer (mask and special tokens).
        mlm_probability: Share of the maskable tokens selected.
        kl_everywhere: A soft-target term reads every real token, so the head scores all of them;
            otherwise only the masked positions.
        token_weights: Optional selection weights per vocabulary id (see `mask_tokens`).

    Returns:
        The batch with masked ``input_ids``, ``mlm_labels`` (original ids at selected positions, -100
        elsewhere) and ``head_positions``; both models see the same masked inputs, as in DistilBERT.
    """
    ids, labels = mask_tokens(
        batch.input_ids, batch.attention_mask, tokenizer,
        mlm_probability=mlm_probability, token_weights=token_weights,
    )  # fmt: skip
    positions = batch.attention_mask.bool() if kl_everywhere else labels != IGNORE_INDEX
    return batch.replace(input_ids=ids, mlm_labels=labels, head_positions=positions)


def head_rows(batch: Batch, labels: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM labels and KL positions (both ``[B, S]``) aligned with the logits the head returned.

    When the batch holds ``head_positions`` the head ran only there and its logits are ``[N, V]``, so
    both are gathered to ``[N]``; otherwise they are returned unchanged.
    """
    if batch.head_positions is None:
        return labels, where
    return labels[batch.head_positions], where[batch.head_positions]
