"""SQuAD exact match and F1, in percent, as the official v1.1 and v2.0 evaluation scripts compute them."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["normalize_answer", "question_scores", "squad_metrics"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower-case, drop punctuation, drop a/an/the, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        # SQuAD 2.0 rule: "no answer" (nothing left after normalising) scores 1 only against "no answer".
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """SQuAD exact match and F1, in percent, as the official v1.1 and v2.0 evaluation scripts compute them.

    Each question scores the maximum over its reference answers. Answers are compared after
    `normalize_answer`. An empty reference list (an unanswerable SQuAD 2.0 question) means the only
    correct prediction is the empty string, and, as in the v2.0 script, references that normalise to
    nothing are dropped first. A question without a prediction scores 0 (official behaviour);
    predictions for unknown ids are ignored.

    Args:
        predictions: Question id -> predicted answer text (``""`` for "no answer").
        references: Question id -> reference answer texts (empty for "no answer").

    Returns:
        ``{"exact_match": ..., "f1": ...}``, means over ``references`` times 100.

    Raises:
        ValueError: ``references`` is empty.
    """
    em, f1 = question_scores(predictions, references)
    return {"exact_match": float(em.mean()), "f1": float(f1.mean())}


def question_scores(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each question's exact match and F1 (0-100), in the order of ``references`` (see `squad_metrics`).

    Raises:
        ValueError: ``references`` is empty.
    """
    if not references:
        raise ValueError("squad_metrics needs at least one reference question.")
    exact = np.zeros(len(references))
    f1 = np.zeros(len(references))
    for i, (qid, answers) in enumerate(references.items()):
        if qid not in predictions:
            continue
        golds = [a for a in answers if normalize_answer(a)] or [""]
        pred = predictions[qid]
        exact[i] = 100.0 * max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1[i] = 100.0 * max(_token_f1(pred, g) for g in golds)
    return exact, f1
