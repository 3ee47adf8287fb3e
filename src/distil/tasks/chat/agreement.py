"""How closely a student follows its teacher on conversations: token agreement and greedy generations.

- ``top1_agreement``: at every assistant token of the dev conversations (both models reading the same
  reference text), the share of positions where the two models' most likely next tokens are equal.
- ``greedy_exact_match`` / ``greedy_token_f1``: both models complete each conversation's last prompt
  greedily; the share of identical completions, and the mean overlap F1 of their tokens (counted as
  bags, as SQuAD's F1 counts words).
- ``reference_exact_match`` (for each model, ``student_`` / ``teacher_``): the share of greedy
  completions equal to the dataset's answer (its tokens up to the first end-of-sequence token).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.losses.baselines import IGNORE_INDEX
from distil.models.generation import Sampling, complete
from distil.types import Batch

__all__ = ["generation_agreement", "token_agreement"]


@torch.no_grad()
def token_agreement(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    rows: Dataset,
    collate: Callable[[list[dict[str, Any]]], Batch],
    batch_size: int,
) -> dict[str, float]:
    """``top1_agreement`` over the scored (assistant) positions of ``rows``."""
    same, count = 0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        assert batch.labels is not None
        s, t = (_next_tokens(model, batch) for model in (student, teacher))
        scored = batch.labels != IGNORE_INDEX
        same += int((s == t)[scored].sum())
        count += int(scored.sum())
    return {"top1_agreement": same / max(count, 1), "agreement_tokens": float(count)}


def _next_tokens(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """The model's most likely next token at every position, on the CPU."""
    inputs = {k: v.to(model.device) for k, v in model_inputs(model, batch).items()}
    return model(**inputs, use_cache=False).logits.argmax(-1).cpu()


def _f1(a: list[int], b: list[int]) -> float:
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return float(a == b)
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def _reference(row: dict[str, Any], eos: set[int]) -> list[int]:
    """The last assistant turn's tokens, cut after its first end-of-sequence token."""
    n, ids, flags = int(row["prompt_length"]), row["input_ids"], row["assistant"]
    end = n
    while end < len(ids) and flags[end]:
        end += 1
    answer = list(ids[n:end])
    stop = next((i for i, t in enumerate(answer) if t in eos), None)
    return answer if stop is None else answer[: stop + 1]


@torch.no_grad()
def generation_agreement(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    rows: Dataset,
    batch_size: int,
    max_new_tokens: int,
    pad_token_id: int,
    eos: set[int],
) -> tuple[dict[str, float], list[dict[str, list[int]]]]:
    """Greedy completions of every row's last prompt by both models, compared; and the completions."""
    greedy = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
    samples: list[dict[str, list[int]]] = []
    for start in range(0, len(rows), batch_size):
        chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        prompts = [r["input_ids"][: r["prompt_length"]] for r in chunk]
        seeds = [0] * len(prompts)  # greedy: no draws
        s = complete(student, prompts, seeds, greedy, pad_token_id)
        t = complete(teacher, prompts, seeds, greedy, pad_token_id)
        for r, p, a, b in zip(chunk, prompts, s, t, strict=True):
            samples.append({"prompt": p, "student": a, "teacher": b, "reference": _reference(r, eos)})
    n = max(len(samples), 1)
    return {
        "greedy_exact_match": sum(x["student"] == x["teacher"] for x in samples) / n,
        "greedy_token_f1": sum(_f1(x["student"], x["teacher"]) for x in samples) / n,
        "student_reference_exact_match": sum(x["student"] == x["reference"] for x in samples) / n,
        "teacher_reference_exact_match": sum(x["teacher"] == x["reference"] for x in samples) / n,
    }, samples
