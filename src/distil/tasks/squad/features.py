"""SQuAD questions -> model features: windows over long contexts, start/end labels, offsets for decoding.

As in Hugging Face's ``run_qa``: each (question, context) pair is tokenised question first, truncating
only the context to ``max_length`` tokens; a context that does not fit is cut into several overlapping
windows ("features") that share ``doc_stride`` tokens. A feature's labels are the token positions of
the first reference answer, or the position of the ``[CLS]`` token (index 0 when the tokenizer has
none) when the question is unanswerable or the answer is not wholly inside that window. Evaluation
features also keep, per token, the character span it covers in the context (``-1, -1`` for question
and special tokens), flattened to ``[s0, e0, s1, e1, ...]``, so predicted token spans map back to text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import datasets

from distil.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["NO_OFFSET", "build_features"]

NO_OFFSET = (-1, -1)
_CHUNK = 1000  # examples per tokenizer call: fast batching, bounded memory
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _cap_questions(questions: list[str], tokenizer: PreTrainedTokenizerBase, limit: int) -> list[str]:
    # A question longer than the window minus the stride leaves no room to slide over the context (HF's
    # tokenizers raise); cut such questions at a token boundary instead. Real SQuAD questions are short.
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for question, offsets in zip(questions, encoded["offset_mapping"], strict=True):
        out.append(question[: offsets[limit - 1][1]] if len(offsets) > limit else question)
    return out


def _context_range(sequence_ids: list[int | None]) -> tuple[int, int]:
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return first, last


def _span_labels(
    offsets: list[tuple[int, int]], context: tuple[int, int], answer: tuple[int, int] | None, cls: int
) -> tuple[int, int]:
    """Token start/end of the character span ``answer`` in this window, or ``(cls, cls)``."""
    if answer is None:
        return cls, cls
    first, last = context
    start_char, end_char = answer
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls, cls  # the answer is (partly) outside this window
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def build_features(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    *,
    keep_offsets: bool,
) -> datasets.Dataset:
    """Tokenise SQuAD rows (from `distil.tasks.squad.reader.read_squad`) into windowed features.

    Args:
        ds: Question rows.
        tokenizer: A fast tokenizer (offset mappings are needed).
        max_length: Tokens per feature, special tokens included (384 in the papers).
        doc_stride: Tokens shared by consecutive windows of one context (128 in the papers).
        keep_offsets: Keep each token's character span in the context (needed to decode predictions).

    Returns:
        An in-memory dataset with ``input_ids``, ``attention_mask`` and (when the tokenizer makes them)
        ``token_type_ids``; ``labels`` (``[start, end]`` token positions); ``cls_index``; ``example``
        (the row of ``ds``); ``idx`` (the feature's row number); and with ``keep_offsets``, ``offsets`` (flat
        character spans, two per token).

    Raises:
        ConfigError: The tokenizer is not a fast one, or ``doc_stride`` leaves no room for a question.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "SQuAD needs a fast tokenizer (offset mappings); the model's tokenizer is a slow one. Save the "
            "model with a tokenizer.json (a fast tokenizer) or pick a model that has one."
        )
    limit = max_length - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride - 1
    if limit < 1:
        raise ConfigError(
            f"data.doc_stride={doc_stride} leaves no room for the question in {max_length} tokens."
        )
    cls_id = tokenizer.cls_token_id
    out: dict[str, list[Any]] = {"labels": [], "cls_index": [], "example": []}
    if keep_offsets:
        out["offsets"] = []
    for begin in range(0, len(ds), _CHUNK):
        rows = ds[begin : begin + _CHUNK]
        questions = _cap_questions([q.lstrip() for q in rows["question"]], tokenizer, limit)
        enc = tokenizer(
            questions,
            rows["context"],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for key in _MODEL_INPUTS:
            if key in enc:
                out.setdefault(key, []).extend(enc[key])
        for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
            ids, offsets, seq_ids = enc["input_ids"][i], enc["offset_mapping"][i], enc.sequence_ids(i)
            cls = ids.index(cls_id) if cls_id in ids else 0
            texts, starts = rows["answer_texts"][sample], rows["answer_starts"][sample]
            answer = (starts[0], starts[0] + len(texts[0])) if texts else None
            context = _context_range(seq_ids)
            out["labels"].append(list(_span_labels(offsets, context, answer, cls)))
            out["cls_index"].append(cls)
            out["example"].append(begin + sample)
            if keep_offsets:
                # Flat [s0, e0, s1, e1, ...]: one Arrow list per feature instead of a list per token.
                out["offsets"].append(
                    [x for o, s in zip(offsets, seq_ids, strict=True) for x in (o if s == 1 else NO_OFFSET)]
                )
    out["idx"] = list(range(len(out["labels"])))
    return datasets.Dataset.from_dict(out)
