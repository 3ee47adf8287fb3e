"""Build students: teacher-layer selection (layer maps), smaller random models, and teacher copies.

Layer numbers are 1-indexed throughout (layer 1 is the first Transformer block), as in the papers and in
``hidden_states[k]`` of Hugging Face outputs, where index 0 is the embedding output.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.errors import ConfigError
from distil.models.families import family_of, get_layers, num_layers
from distil.models.layer_maps import validate_layer_list
from distil.models.loading import HEADS

__all__ = [
    "StudentConfig",
    "count_parameters",
    "student_copy",
    "student_from_config",
    "student_from_layers",
]


@dataclass
class StudentConfig:
    """How the student is built (the ``models.student`` section of a run config).

    Attributes:
        init: ``layers``: teacher embeddings and the chosen teacher layers; ``config``: random init of the
            teacher's family at the given sizes; ``copy``: an exact copy of the teacher;
            ``pretrained``: load ``path``.
        path: Checkpoint for ``init: pretrained`` (local dir, hub id or ``embedded``).
        layers: 1-indexed teacher layers for ``init: layers``; overrides ``num_layers``/``layer_map``.
        num_layers: Student depth for ``init: layers`` (with ``layer_map``) or ``init: config``.
        layer_map: ``paper``: M(k) = 2k-1 (k <= K/2), 2k (k > K/2); ``uniform``: k * L / K.
        hidden_size: Width for ``init: config`` (default: the teacher's).
        num_heads: Attention heads for ``init: config`` (default: the teacher's).
        intermediate_size: FFN size for ``init: config`` (default: the teacher's FFN size, not scaled with
            ``hidden_size``).
    """

    init: Literal["layers", "config", "copy", "pretrained"] = "layers"
    path: str | None = None
    layers: list[int] | None = None
    num_layers: int | None = None
    layer_map: Literal["paper", "uniform"] = "paper"
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None

    def __post_init__(self) -> None:
        if self.init == "pretrained" and not self.path:
            raise ConfigError("models.student.path is required with models.student.init=pretrained.")
        if self.init in ("layers", "config") and self.layers is None and self.num_layers is None:
            raise ConfigError(
                f"models.student.init={self.init} needs models.student.num_layers (or .layers)."
            )
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"models.student.{name} must be >= 1, got {value}.")

    @classmethod
    def pretrained(cls, path: str) -> StudentConfig:
        """A student loaded from ``path`` (how a plan hands one stage's student to the next)."""
        return cls(init="pretrained", path=path)


def _layers_path(model: PreTrainedModel) -> str:
    blocks = get_layers(model)
    return next(name for name, module in model.named_modules() if module is blocks)


def student_from_layers(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A shallower copy of ``teacher`` whose block ``k`` starts from teacher block ``layers[k]``.

    Everything outside the blocks (embeddings, pooler, final norm, task or LM head) is copied as is. The
    student is a new model of the teacher's class, dtype and device, with its own storage and
    ``requires_grad=True``; switching it to train or eval mode is left to the caller.

    Args:
        teacher: Model of a family in `distil.models.families.SUPPORTED`.
        layers: 1-indexed, strictly increasing teacher layers, e.g. from `paper_layer_map`.

    Returns:
        The student.

    Raises:
        ConfigError: ``layers`` is not a valid list for the teacher's depth.
        ModelError: The teacher's family is not supported.
    """
    layers = validate_layer_list(layers, num_layers(teacher.config))
    config = copy.deepcopy(teacher.config)
    setattr(config, family_of(config).num_layers_key, len(layers))
    if isinstance(getattr(config, "layer_types", None), list):
        # Per-layer attention kinds (sliding or full) must follow the layers they belong to.
        config.layer_types = [config.layer_types[i - 1] for i in layers]
    model_class: Any = type(teacher)  # transformers' decorated __init__ is opaque to type checkers
    student: PreTrainedModel = model_class(config).to(device=teacher.device, dtype=teacher.dtype)

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


def _student_config(
    teacher_config: PretrainedConfig,
    num_layers: int,
    hidden_size: int | None,
    num_heads: int | None,
    intermediate_size: int | None,
) -> PretrainedConfig:
    spec = family_of(teacher_config)
    hidden_key, heads_key, ffn_key = spec.width_keys
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
