"""Build students: teacher-layer selection (layer maps), smaller random models, and teacher copies.

Layer numbers are 1-indexed throughout (layer 1 is the first Transformer block), as in the papers and in
``hidden_states[k]`` of Hugging Face outputs, where index 0 is the embedding output.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.errors import ConfigError
from distil.models.architectures import arch_spec, get_layers, num_layers
from distil.models.loading import HEADS

__all__ = [
    "count_parameters",
    "paper_layer_map",
    "student_copy",
    "student_from_config",
    "student_from_layers",
    "uniform_layer_map",
    "validate_layer_list",
]

_LAYERS_FIELD = "models.student.layers"


def paper_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The TED / DistilBERT map: ``M(k) = 2k - 1`` for ``k <= K/2`` and ``M(k) = 2k`` otherwise.

    Liang et al., "Less is More: Task-aware Layer-wise Distillation" (ICML 2023), appendix; it is the
    layer choice of DistilBERT (Sanh et al., 2019). 12 -> 6 gives ``[1, 3, 5, 8, 10, 12]``.

    The formula does not depend on the teacher depth ``L``: it is defined for halving the depth. With
    ``L > 2K`` it would silently ignore the teacher's top layers, and with ``L < 2K`` it runs past the
    last layer, so ``L == 2K`` is required.

    Args:
        teacher_layers: Teacher depth ``L``.
        student_layers: Student depth ``K``.

    Returns:
        The 1-indexed teacher layer for each student layer ``k = 1..K``.

    Raises:
        ConfigError: ``teacher_layers != 2 * student_layers``.
    """
    if student_layers < 1 or teacher_layers != 2 * student_layers:
        raise ConfigError(
            f"The paper layer map halves the depth, so it needs teacher layers == 2 x student layers; got "
            f"{teacher_layers} teacher and {student_layers} student layers. Use the 'uniform' map or give "
            f"an explicit list in {_LAYERS_FIELD}."
        )
    # k <= K/2 written as 2k <= K keeps odd K exact (6 -> 3 gives [1, 4, 6]).
    return [2 * k - 1 if 2 * k <= student_layers else 2 * k for k in range(1, student_layers + 1)]


def uniform_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The uniform map ``M(k) = k * L / K`` (TinyBERT's ``g(m) = m * N / M``); the last layer maps to ``L``.

    When ``K`` does not divide ``L`` the value is rounded half up, which keeps the map strictly
    increasing (12 -> 5 gives ``[2, 5, 7, 10, 12]``).

    Args:
        teacher_layers: Teacher depth ``L``.
        student_layers: Student depth ``K``.

    Returns:
        The 1-indexed teacher layer for each student layer ``k = 1..K``.

    Raises:
        ConfigError: ``student_layers`` is not in ``1..teacher_layers``.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"A uniform layer map needs 1 <= student layers <= teacher layers; got {student_layers} student "
            f"and {teacher_layers} teacher layers."
        )
    return [
        (2 * k * teacher_layers + student_layers) // (2 * student_layers)
        for k in range(1, student_layers + 1)
    ]


def validate_layer_list(layers: Sequence[int], teacher_layers: int) -> list[int]:
    """Check an explicit, 1-indexed list of teacher layers.

    Returns:
        The layers as a list of ``int``.

    Raises:
        ConfigError: The list is empty, holds a non-integer or a value outside ``1..teacher_layers``, or is
            not strictly increasing.
    """
    where = f"{_LAYERS_FIELD}={list(layers)!r}"
    if not layers:
        raise ConfigError(f"{where} is empty; give at least one teacher layer in 1..{teacher_layers}.")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= teacher_layers:
            raise ConfigError(
                f"{where}: {layer!r} is not a teacher layer; layers are 1-indexed integers "
                f"in 1..{teacher_layers}."
            )
    if any(b <= a for a, b in itertools.pairwise(layers)):
        raise ConfigError(f"{where} must be strictly increasing (each teacher layer once, bottom to top).")
    return list(layers)


def _layers_path(model: PreTrainedModel) -> str:
    blocks = get_layers(model)
    return next(name for name, module in model.named_modules() if module is blocks)


def student_from_layers(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A shallower copy of ``teacher`` whose block ``k`` starts from teacher block ``layers[k]``.

    Everything outside the blocks (embeddings, pooler, final norm, task or LM head) is copied as is. The
    student is a new model of the teacher's class, dtype and device, with its own storage and
    ``requires_grad=True``; switching it to train or eval mode is left to the caller.

    Args:
        teacher: Model of a family in `distil.models.architectures.SUPPORTED`.
        layers: 1-indexed, strictly increasing teacher layers, e.g. from `paper_layer_map`.

    Returns:
        The student.

    Raises:
        ConfigError: ``layers`` is not a valid list for the teacher's depth.
        ModelError: The teacher's family is not supported.
    """
    layers = validate_layer_list(layers, num_layers(teacher.config))
    config = copy.deepcopy(teacher.config)
    setattr(config, arch_spec(config).num_layers_key, len(layers))
    if isinstance(getattr(config, "layer_types", None), list):
        # Per-layer attention kinds (sliding or full) must follow the layers they belong to.
        config.layer_types = [config.layer_types[i - 1] for i in layers]
    student = type(teacher)(config).to(device=teacher.device, dtype=teacher.dtype)

    prefix = _layers_path(teacher) + "."
    new_index = {str(src - 1): str(dst) for dst, src in enumerate(layers)}
    state: dict[str, Any] = {}
    for key, value in teacher.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        index, rest = key[len(prefix) :].split(".", 1)
        if index in new_index:
            state[f"{prefix}{new_index[index]}.{rest}"] = value
    # strict=True: a key the renaming missed would otherwise stay randomly initialised without a word.
    student.load_state_dict(state, strict=True)
    return student.requires_grad_(True)


# Per-family config keys for (hidden size, attention heads, feed-forward size).
_WIDTH_KEYS: dict[str, tuple[str, str, str]] = {
    "distilbert": ("dim", "n_heads", "hidden_dim"),
    "gpt2": ("n_embd", "n_head", "n_inner"),
}
_DEFAULT_WIDTH_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size")


def _student_config(
    teacher_config: PretrainedConfig,
    num_layers: int,
    hidden_size: int | None,
    num_heads: int | None,
    intermediate_size: int | None,
) -> PretrainedConfig:
    spec = arch_spec(teacher_config)
    hidden_key, heads_key, ffn_key = _WIDTH_KEYS.get(teacher_config.model_type, _DEFAULT_WIDTH_KEYS)
    hidden = hidden_size or getattr(teacher_config, hidden_key)
    heads = num_heads or getattr(teacher_config, heads_key)
    if hidden % heads:
        raise ConfigError(
            f"models.student.hidden_size={hidden} must be divisible by models.student.num_heads={heads}."
        )
    if num_layers < 1:
        raise ConfigError(f"models.student.num_layers={num_layers} must be at least 1.")
    values = teacher_config.to_dict()
    # Derived per-layer and per-width fields are dropped so that the config class recomputes them.
    values.pop("layer_types", None)
    values |= {spec.num_layers_key: num_layers, hidden_key: hidden, heads_key: heads}
    if intermediate_size is not None:
        values[ffn_key] = intermediate_size
    if "head_dim" in values:
        values["head_dim"] = hidden // heads
    if values.get("pooler_hidden_size") is not None:
        values["pooler_hidden_size"] = hidden  # DeBERTa's pooler reads the last hidden state directly
    teacher_kv = values.get("num_key_value_heads")
    if teacher_kv:
        # Keep the teacher's grouped-query ratio when it divides the new head count.
        ratio = getattr(teacher_config, heads_key) // teacher_kv
        values["num_key_value_heads"] = heads // ratio if ratio and heads % ratio == 0 else heads
    return type(teacher_config).from_dict(values)


def student_from_config(
    teacher_config: PretrainedConfig,
    *,
    num_layers: int,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    head: str = "seq",
    num_labels: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised student of the teacher's family, with its own depth and widths.

    Sizes left as ``None`` keep the teacher's value (a ``None`` feed-forward size for GPT-2 means
    ``4 * n_embd``). The keys are mapped per family: ``dim/n_heads/hidden_dim`` (DistilBERT),
    ``n_embd/n_head/n_inner`` (GPT-2), ``hidden_size/num_attention_heads/intermediate_size`` (the others;
    Llama-like families also get ``num_key_value_heads`` with the teacher's query-to-KV ratio when that
    divides the new head count, else one KV head per query head).

    Args:
        teacher_config: Config of the teacher.
        num_layers: Student depth.
        hidden_size: Student hidden size.
        num_heads: Student attention heads.
        intermediate_size: Student feed-forward size.
        head: ``"seq"``, ``"lm"`` or ``"base"``.
        num_labels: Outputs of a ``"seq"`` head; ``None`` keeps the teacher's.

    Returns:
        The student, with ``requires_grad=True``.

    Raises:
        ConfigError: Unknown head, ``hidden_size`` not divisible by ``num_heads``, or ``num_layers < 1``.
        ModelError: The teacher's family is not supported.
    """
    if head not in HEADS:
        raise ConfigError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    config = _student_config(teacher_config, num_layers, hidden_size, num_heads, intermediate_size)
    if num_labels is not None:
        config.num_labels = num_labels
    attn = getattr(teacher_config, "_attn_implementation", None)
    return HEADS[head].from_config(config, attn_implementation=attn).requires_grad_(True)


def student_copy(teacher: PreTrainedModel) -> PreTrainedModel:
    """A deep copy of ``teacher`` with its own storage and ``requires_grad=True`` (HomoDistil's start)."""
    return copy.deepcopy(teacher).requires_grad_(True)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, each tied tensor counted once."""
    return sum(p.numel() for p in model.parameters())
