"""Sampling completions from a causal LM, with one random stream per prompt.

On-policy distillation (`distil.methods.gkd`) and ``distil generate`` both complete prompts here.
Transformers' ``generate`` runs the decoding (KV cache, end-of-sequence handling, and ``synced_gpus``
so that processes holding shards of one model keep running forward passes together); the choice of each
next token is ours (`RowSampler`): temperature and nucleus (top-p) sampling that draws each row's token
from a generator seeded for that row. So a prompt's completion depends on its seed and the model only,
never on which other prompts share its batch or which process it falls to: two processes sample what
one samples, and a resumed run samples what the uninterrupted one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel

from distil.errors import ConfigError

__all__ = ["RowSampler", "Sampling", "complete", "row_seed"]


@dataclass(frozen=True)
class Sampling:
    """How completions are sampled.

    Attributes:
        temperature: Softmax temperature of sampling; 0 takes the most likely token (greedy).
        top_p: Sample from the smallest set of tokens whose probability reaches ``top_p`` (1: all).
        max_new_tokens: Tokens generated at most per prompt (fewer when the end-of-sequence token comes).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0: greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")


def row_seed(*parts: int) -> int:
    """A 63-bit seed that is a function of ``parts`` only (e.g. run seed, step, example index)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class RowSampler(LogitsProcessor):
    """Choose each row's next token by its own generator; returns scores whose argmax is that token.

    ``generate`` runs greedy decoding over these scores, so the token drawn here is the one it appends.
    """

    def __init__(self, seeds: Sequence[int], sampling: Sampling) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.sampling = sampling

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Scores that are 0 at each row's drawn token and -inf elsewhere."""
        s = self.sampling
        logits = scores.float()
        if s.temperature == 0:
            choice = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / s.temperature, dim=-1)
            if s.top_p < 1:
                sorted_p, order = probs.sort(dim=-1, descending=True)
                before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
                sorted_p = sorted_p.masked_fill(before >= s.top_p, 0.0)  # the most likely always stays
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            cdf = probs.cumsum(-1).cpu()
            draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
            targets = (draws * cdf[:, -1].double()).to(cdf.dtype)[:, None]
            choice = torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
            choice = choice.to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, choice[:, None], 0.0)
        return out  # type: ignore[return-value]


def _eos_ids(model: PreTrainedModel) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, list) else [int(eos)]


@torch.no_grad()
def complete(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    sampling: Sampling,
    pad_token_id: int,
    *,
    synced: bool = False,
) -> list[list[int]]:
    """Sample one completion per prompt; each ends at (and includes) the first end-of-sequence token.

    Args:
        model: A causal LM (its parameters usable by its own forward: see `distil.types.Runtime`).
        prompts: Token ids, one list per prompt (each at least one token).
        seeds: One seed per prompt (`row_seed`).
        sampling: Temperature, top-p and length.
        pad_token_id: Fills the left of shorter prompts (masked out).
        synced: Processes share the model's shards: keep running forward passes until every process is done.

    Returns:
        The generated tokens of each prompt (prompt excluded).
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    eos = _eos_ids(model)
    config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id,
        eos_token_id=eos or None, use_cache=True,
    )  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        generate: Any = model.generate  # transformers' decorated signature is opaque to type checkers
        out: Tensor = generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
            logits_processor=LogitsProcessorList([RowSampler(seeds, sampling)]), synced_gpus=synced,
        )  # fmt: skip
    finally:
        model.train(was_training)
    completions = []
    for row in out[:, width:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos]
        completions.append(row[: ends[0] + 1] if ends else row)
    return completions
