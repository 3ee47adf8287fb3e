"""Layer maps: which teacher layer each student layer is paired with, or initialised from.

The one owner of the map policies every method and student builder uses. Layers are 1-indexed, as in
the papers (``M(k)`` for 6 -> 3 is ``[1, 4, 6]``); the embedding output is never mapped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from distil.errors import ConfigError

__all__ = ["paper_layer_map", "resolve_layer_map", "uniform_layer_map", "validate_layer_list"]

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


def resolve_layer_map(
    spec: str | Sequence[int], teacher_layers: int, student_layers: int, field: str = "method.layer_map"
) -> list[int]:
    """The 1-indexed teacher layer ``M(k)`` paired with each student layer ``k = 1..K``.

    Args:
        spec: ``"paper"``: ``M(k) = 2k - 1`` for ``k <= K/2``, ``2k`` otherwise (TED appendix A.2.5,
            DistilBERT's choice; needs ``L == 2K``); ``"uniform"``: ``M(k) = k * L / K`` rounded half up
            (what TED's released ``filter_interval`` gives when ``K`` divides ``L``); or an explicit list
            of ``K`` teacher layers in ``1..L``.
        teacher_layers: Teacher depth ``L``.
        student_layers: Student depth ``K``.
        field: Config field named in errors.

    Returns:
        ``[M(1), ..., M(K)]``.

    Raises:
        ConfigError: The map does not fit the two depths.
    """
    depths = f"a {teacher_layers}-layer teacher and a {student_layers}-layer student"
    if isinstance(spec, str):
        if spec == "paper":
            if student_layers < 1 or teacher_layers != 2 * student_layers:
                raise ConfigError(
                    f"{field}=paper (M(k) = 2k-1 for k <= K/2, else 2k) halves the depth, so it needs "
                    f"teacher layers == 2 x student layers; got {depths}. Use {field}=uniform or an "
                    f"explicit list of {student_layers} teacher layers."
                )
            return paper_layer_map(teacher_layers, student_layers)
        if spec == "uniform":
            if not 1 <= student_layers <= teacher_layers:
                raise ConfigError(
                    f"{field}=uniform needs 1 <= student layers <= teacher layers; got {depths}."
                )
            return uniform_layer_map(teacher_layers, student_layers)
        raise ConfigError(f"{field} must be 'paper', 'uniform' or a list of teacher layers, got {spec!r}.")
    layers = list(spec)
    if len(layers) != student_layers:
        raise ConfigError(
            f"{field}={layers!r} has {len(layers)} entries, but the student has {student_layers} layers: "
            "give one teacher layer per student layer."
        )
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= teacher_layers:
            raise ConfigError(
                f"{field}={layers!r}: {layer!r} is not a layer of the {teacher_layers}-layer teacher; "
                f"layers are 1-indexed integers in 1..{teacher_layers} (the embedding output is not mapped)."
            )
    return layers
