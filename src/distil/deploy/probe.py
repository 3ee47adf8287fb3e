"""The batches an export is traced with and checked on: padded, with a real attention mask."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import collate
from distil.errors import ModelError
from distil.models.loading import load_tokenizer

__all__ = ["PROBE_SENTENCES", "probe_batches"]

# Natural text: int8 error on random token ids is about twice that on text, and says less about use.
# Lengths vary so that every row but the longest is padded.
PROBE_SENTENCES = (
    "A gorgeous, witty, seductive movie.",
    "It is not bad.",
    "The film is strictly routine, and the actors seem to know it from the first scene to the last.",
    "One of the greatest family-oriented fantasy adventures ever made.",
    "No.",
    "I would not recommend this to anyone who values their time or their money.",
    "The plot is thin but the performances carry it.",
    "Some moments work; most do not.",
    "An ambitious, sprawling and ultimately exhausting story about two brothers who never quite meet.",
    "Funny.",
    "Worth seeing for the music alone.",
    "The director has a keen eye for detail and a tin ear for dialogue.",
)
_TRACE_ROWS = (1, 4)  # two short rows: the traced shape is smaller than the checked one


def _rows_from_text(model_dir: Path, max_length: int) -> list[dict[str, list[int]]] | None:
    try:
        tokenizer = load_tokenizer(str(model_dir))
    except ModelError:
        return None
    return [
        {"input_ids": tokenizer(text, truncation=True, max_length=max_length)["input_ids"]}
        for text in PROBE_SENTENCES
    ]


def _random_rows(vocab_size: int, max_length: int) -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(0)
    lengths = [max(2, (i * 7) % max_length) for i in range(1, len(PROBE_SENTENCES) + 1)]
    high = min(vocab_size, 1000)
    return [{"input_ids": torch.randint(5, high, (n,), generator=generator).tolist()} for n in lengths]


def probe_batches(
    model: PreTrainedModel, model_dir: Path, max_length: int = 48
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A 2-row trace batch and a longer 12-row check batch, both padded on the right.

    Rows are `PROBE_SENTENCES` through the model's tokenizer, or random token ids when the directory has
    no tokenizer. ``token_type_ids`` (zeros) is included exactly when the family takes it.

    Args:
        model: The classifier being exported.
        model_dir: Its directory (for the tokenizer).
        max_length: Truncation length of the probe rows.

    Returns:
        ``(trace_batch, check_batch)``, each a dict of ``(B, L)`` int64 tensors in the model's input order.
    """
    rows = _rows_from_text(model_dir, max_length) or _random_rows(int(model.config.vocab_size), max_length)
    pad_id = model.config.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)

    def batch(selected: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        out = collate(selected, pad_id)
        out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        return model_inputs(model, out)

    return batch([rows[i] for i in _TRACE_ROWS]), batch(rows)
