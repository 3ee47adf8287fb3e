"""One record per head kind: how a saved model's class names it, and what loading, export and cards need.

Every module that reads a head from a class name, or needs a head's auto class, pipeline tag or exported
outputs, asks here: adding a head kind is one record below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["HEADS", "Head", "HeadRecord", "head_of_architectures"]

Head = Literal["seq", "lm", "base", "mlm", "qa"]


@dataclass(frozen=True)
class HeadRecord:
    """What distil knows of one head kind.

    Attributes:
        suffixes: Class-name endings that carry this head (``BertForSequenceClassification``).
        auto_class: The transformers auto class that loads it (``mlm`` loads a causal LM for a decoder).
        pipeline_tag: The Hub pipeline tag of a model with this head.
        onnx_outputs: The outputs an ONNX export keeps, in order.
        must_be_saved: A checkpoint carries this head trained only when it was saved with it (its
            ``architectures`` end in one of ``suffixes``): loaded otherwise, it is random, so a teacher of
            this head is refused without it.
        purpose: What a model with this head is for, in a model card's words.
    """

    suffixes: tuple[str, ...]
    auto_class: str
    pipeline_tag: str
    onnx_outputs: tuple[str, ...]
    must_be_saved: bool
    purpose: str


HEADS: dict[str, HeadRecord] = {
    "seq": HeadRecord(
        ("ForSequenceClassification",),
        "AutoModelForSequenceClassification",
        "text-classification",
        ("logits",),
        must_be_saved=True,
        purpose="text classification",
    ),
    "qa": HeadRecord(
        ("ForQuestionAnswering",),
        "AutoModelForQuestionAnswering",
        "question-answering",
        ("start_logits", "end_logits"),
        must_be_saved=True,
        purpose="extractive question answering",
    ),
    "lm": HeadRecord(
        ("ForCausalLM", "LMHeadModel"),
        "AutoModelForCausalLM",
        "text-generation",
        ("logits",),
        must_be_saved=True,
        purpose="text generation",
    ),
    # An encoder's masked-LM head, or a decoder's tied output layer (`families.has_trained_lm_head`).
    "mlm": HeadRecord(
        ("ForMaskedLM",),
        "AutoModelForMaskedLM",
        "fill-mask",
        ("logits",),
        must_be_saved=False,
        purpose="masked-token prediction",
    ),
    "base": HeadRecord(
        (),
        "AutoModel",
        "feature-extraction",
        ("last_hidden_state",),
        must_be_saved=False,
        purpose="sentence features",
    ),
}


def head_of_architectures(architectures: Iterable[str]) -> str:
    """The head that a saved model's class names carry (``base``: a bare encoder or an unknown class)."""
    for arch in architectures:
        for head, record in HEADS.items():
            if record.suffixes and arch.endswith(record.suffixes):
                return head
    return "base"
