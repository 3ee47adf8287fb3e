"""Extractive QA inference: start/end scores per feature, then n-best span decoding per question.

Decoding follows Hugging Face's ``postprocess_qa_predictions``: in every window ("feature") of a
question, the ``n_best`` highest start and end scores are paired; a pair is a candidate when both
tokens lie in the context, ``end >= start`` and the span has at most ``max_answer_length`` tokens; its
score is ``start_logit + end_logit``. The best candidate over all windows is the answer (its text is the
context between the two tokens' character offsets). For SQuAD 2.0 the no-answer score is
``start_logit[CLS] + end_logit[CLS]``, the smallest over the question's windows, and "no answer" (``""``)
is predicted when it exceeds the best span's score by more than ``null_threshold``. A question without
any valid candidate gets ``""``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.data.batching import collate, length_sorted_batches, row_lengths
from distil.evaluation.shards import Shard
from distil.progress import Phase

__all__ = ["decode_answers", "predict_span_scores"]

_ALONE = Shard()


@torch.no_grad()
def predict_span_scores(
    model: PreTrainedModel, features: Dataset, *, batch_size: int, pad_token_id: int, shard: Shard = _ALONE
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end scores of every feature (length-sorted batches, returned in feature order).

    Args:
        model: A question-answering model (outputs ``start_logits`` and ``end_logits``).
        features: Features from `distil.tasks.squad.features.build_features`.
        batch_size: Features per forward pass.
        pad_token_id: Padding id of ``input_ids``.
        shard: This process's share when several processes evaluate together.

    Returns:
        ``(start, end)``: one float32 array per feature, as long as its unpadded ``input_ids``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = row_lengths(features)
    starts: list[np.ndarray] = [np.empty(0, np.float32)] * len(lengths)
    ends = list(starts)
    batches = list(length_sorted_batches(features, batch_size))
    mine, padding = shard.take(batches)
    done: list[tuple[int, np.ndarray, np.ndarray]] = []
    todo = [*mine, *batches[:1] * padding]
    phase = Phase(f"evaluating on {len(lengths)} question windows", len(todo), enabled=shard.rank == 0)
    for n, order in enumerate(todo):
        rows = [int(i) for i in order]
        batch = collate([features[i] for i in rows], pad_token_id)
        out = model(**{k: v.to(device) for k, v in model_inputs(model, batch).items()})
        phase.update()
        if n >= len(mine):
            continue  # a padding pass: every process runs as many forward passes
        start, end = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        done += [(row, start[j, : lengths[row]], end[j, : lengths[row]]) for j, row in enumerate(rows)]
    phase.close()
    for part in shard.gather(done):
        for row, start_row, end_row in part:
            starts[row], ends[row] = start_row, end_row
    model.train(was_training)
    return starts, ends


def _best_span(
    start: np.ndarray, end: np.ndarray, offsets: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """``(score, start_char, end_char)`` of the best valid span in one feature, or ``None``."""
    in_context = offsets[:, 0] >= 0
    top_start = np.argsort(-start, kind="stable")[:n_best]
    top_end = np.argsort(-end, kind="stable")[:n_best]
    s, e = np.meshgrid(top_start, top_end, indexing="ij")
    valid = in_context[s] & in_context[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start[s] + end[e], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(offsets[s[i, j], 0]), int(offsets[e[i, j], 1])


def decode_answers(
    examples: Dataset,
    features: Dataset,
    start_scores: list[np.ndarray],
    end_scores: list[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Turn per-feature scores into one answer text per question (see the module docstring).

    Args:
        examples: Question rows (``id``, ``context``) from `distil.tasks.squad.reader.read_squad`.
        features: Their features, with ``example``, ``offsets`` and ``cls_index``.
        start_scores: Start scores per feature (`predict_span_scores`).
        end_scores: End scores per feature.
        n_best: Start and end candidates per feature.
        max_answer_length: Longest answer in tokens.
        version_2: Allow "no answer" predictions (SQuAD 2.0).
        null_threshold: Predict "no answer" when ``null_score - best_span_score > null_threshold``.

    Returns:
        Question id -> predicted answer text (``""`` for no answer).
    """
    by_example: dict[int, list[int]] = defaultdict(list)
    for f, example in enumerate(features["example"]):
        by_example[int(example)].append(f)
    cls_all = features["cls_index"]
    offsets_of = features.select_columns(["offsets"]).with_format("numpy")  # row by row: bounded memory
    predictions: dict[str, str] = {}
    for e, (qid, context) in enumerate(zip(examples["id"], examples["context"], strict=True)):
        best: tuple[float, int, int] | None = None
        null = np.inf
        for f in by_example.get(e, []):
            start, end, cls = start_scores[f], end_scores[f], cls_all[f]
            null = min(null, float(start[cls] + end[cls]))
            offsets = np.asarray(offsets_of[f]["offsets"], dtype=np.int64).reshape(-1, 2)[: len(start)]
            span = _best_span(start, end, offsets, n_best, max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = span
        if best is None or (version_2 and null - best[0] > null_threshold):
            predictions[qid] = ""
        else:
            predictions[qid] = context[best[1] : best[2]]
    return predictions
