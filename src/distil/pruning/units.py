"""Structured pruning units of a Transformer, the cubic width schedule and target widths (HomoDistil).

A *group* is a set of units pruned together under one 0/1 mask; every parameter axis that a unit touches
is a *slot* of its group, so a unit always disappears from every matrix at once:

- ``hidden``: the residual-stream dims, one mask for the whole model: every embedding table's columns,
  every LayerNorm, each layer's input rows of Q/K/V and the first FFN matrix, output rows (and biases)
  of the attention output and the second FFN matrix, and the heads (MLM transform, pooler, classifier,
  LM decoder tied to the word embeddings).
- ``l<i>_qk``: attention dims of layer ``i``, Q and K tied (a dim only counts if it survives in both).
- ``l<i>_vo``: value dims of layer ``i`` with the matching input columns of the attention output.
- ``l<i>_ffn``: FFN neurons of layer ``i``: first-matrix row and bias with the second-matrix column.

Attention groups keep the same number of dims in every head, and the hidden width is always
``heads * head_dim``: a stock Hugging Face checkpoint (BERT, RoBERTa, GPT-2) can only express uniform
heads whose widths add up to the hidden size, so every intermediate model stays exportable
(`distil.pruning.slicing`). Masks, scores, the cubic schedule and selection live in
`distil.pruning.platon`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from distil.errors import ConfigError, ModelError
from distil.models.families import FAMILIES, Family, PruningLayout, family_of, get_layers

__all__ = [
    "Group",
    "PrunableUnits",
    "Slot",
    "exported_parameters",
    "prunable_units",
    "resolve_targets",
]


@dataclass(frozen=True)
class Slot:
    """One axis of one parameter that a group indexes.

    Attributes:
        param: Parameter name (tied parameters are named once, as ``model.named_parameters()`` does).
        axis: The axis the group's units run along.
        segment: Which ``group.size``-long block of that axis (GPT-2's fused ``[Q | K | V]``: 0, 1, 2).
        query: The block holds query rows (the attention scale is folded into them at export).
    """

    param: str
    axis: int
    segment: int = 0
    query: bool = False


@dataclass
class Group:
    """Units pruned under one mask: ``hidden``, ``l<i>_qk``, ``l<i>_vo`` or ``l<i>_ffn``."""

    key: str
    kind: str
    size: int
    heads: int
    slots: list[Slot] = field(default_factory=list)


@dataclass
class PrunableUnits:
    """Every prunable unit of a model, and what export needs to rebuild it at smaller widths.

    Attributes:
        groups: Groups by key.
        layer_norms: Names of the LayerNorm modules over the hidden stream.
        attention: Name of each layer's attention module (the one with a ``scaling`` attribute).
        attention_path: Path of that module inside one layer.
        hidden_key: Config key of the hidden width (``hidden_size``, ``n_embd``).
        ffn_key: Config key of the FFN width (``intermediate_size``, ``n_inner``).
        num_heads: Attention heads (never pruned).
        head_dim: Per-head width (the model's current one: a narrowed model gets narrowed units).
        ffn: FFN width.
        attention_widths: Attributes of the attention module that hold a width, each with what it holds
            (``head_dim`` or ``hidden``): narrowing a model in place sets them (`distil.pruning.slicing`).
    """

    groups: dict[str, Group]
    layer_norms: list[str]
    attention: list[str]
    attention_path: str
    hidden_key: str
    ffn_key: str
    num_heads: int
    head_dim: int
    ffn: int
    attention_widths: tuple[tuple[str, str], ...] = ()

    def kept_sizes(self, head_dim: int, ffn: int) -> dict[str, int]:
        """Units each group keeps at per-head width ``head_dim`` and FFN width ``ffn``."""
        return {k: ffn if g.kind == "ffn" else self.num_heads * head_dim for k, g in self.groups.items()}


def _family(model: PreTrainedModel) -> tuple[PruningLayout, Family]:
    family = family_of(model)
    if family.pruning is None:
        supported = [name for name, f in FAMILIES.items() if f.pruning is not None]
        raise ConfigError(
            f"HomoDistil's structured pruning supports {', '.join(supported)}; {model.config.model_type!r} "
            "is not supported yet (its record in distil.models.families has no pruning layout)."
        )
    return family.pruning, family


class _Builder:
    """Collects slots by parameter identity, so tied parameters get one name and no duplicate slot."""

    def __init__(self, model: PreTrainedModel, groups: dict[str, Group]) -> None:
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.groups = groups
        self.covered: set[str] = set()

    def add(self, key: str, param: object, axis: int, segment: int = 0, query: bool = False) -> None:
        if not isinstance(param, torch.Tensor):  # a module without a bias
            return
        slot = Slot(self.names[id(param)], axis, segment, query)
        if slot not in self.groups[key].slots:
            self.groups[key].slots.append(slot)
        self.covered.add(slot.param)


def _layer_groups(b: _Builder, fam: PruningLayout, layer: nn.Module, i: int) -> None:
    out_axis, in_axis = (1, 0) if fam.conv1d else (0, 1)
    for proj in fam.projections:
        module = layer.get_submodule(proj.path)
        for segment, kind in enumerate(proj.out):
            key = "hidden" if kind == "hidden" else f"l{i}_{kind}"
            seg = segment if kind != "hidden" else 0
            query = proj.query == segment
            b.add(key, module.weight, out_axis, seg, query)
            b.add(key, getattr(module, "bias", None), 0, seg, query)
        b.add("hidden" if proj.inp == "hidden" else f"l{i}_{proj.inp}", module.weight, in_axis)


def _outer_slots(b: _Builder, model: PreTrainedModel, layers: nn.ModuleList, d: int) -> list[str]:
    """Embeddings, LayerNorms and heads: every module outside the layers' projections."""
    inside = {id(m) for m in layers.modules()}
    norms = []
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            if tuple(module.normalized_shape) != (d,):
                raise ModelError(f"LayerNorm {name!r} is not over the hidden width {d}; cannot prune it.")
            norms.append(name)
            b.add("hidden", module.weight, 0)
            b.add("hidden", module.bias, 0)
        elif id(module) in inside:
            continue
        elif isinstance(module, nn.Embedding) and module.embedding_dim == d:
            b.add("hidden", module.weight, 1)
        elif isinstance(module, nn.Linear):
            if module.in_features == d:
                b.add("hidden", module.weight, 1)
            if module.out_features == d:
                b.add("hidden", module.weight, 0)
                b.add("hidden", module.bias, 0)
        elif any(d in p.shape for p in module.parameters(recurse=False)):
            # e.g. a vocabulary bias is fine; a hidden-width tensor without a rule would break slicing.
            raise ModelError(f"Module {name!r} ({type(module).__name__}) has no pruning rule.")
    return norms


def prunable_units(model: PreTrainedModel) -> PrunableUnits:
    """Every coupled unit of a BERT, RoBERTa, XLM-R or GPT-2 model (any head class).

    Raises:
        ConfigError: The family is not supported.
        ModelError: A module the tables do not know holds hidden-width parameters, or the widths are
            ambiguous (a head whose output size equals the hidden size cannot be told from a hidden map).
    """
    (fam, family), config = _family(model), model.config
    hidden_key, heads_key, ffn_key = family.width_keys
    d, heads = int(getattr(config, hidden_key)), int(getattr(config, heads_key))
    layers = get_layers(model)
    ffn_weight = layers[0].get_submodule(fam.projections[-1].path).weight
    assert isinstance(ffn_weight, torch.Tensor)
    ffn = int(ffn_weight.shape[0 if fam.conv1d else 1])
    if int(getattr(config, "num_labels", 0) or 0) == d or int(config.vocab_size) == d:
        raise ModelError(f"Ambiguous widths: the label or vocabulary size equals the hidden size {d}.")
    groups = {"hidden": Group("hidden", "hidden", d, 1)}
    for i in range(len(layers)):
        groups |= {
            f"l{i}_qk": Group(f"l{i}_qk", "qk", d, heads),
            f"l{i}_vo": Group(f"l{i}_vo", "vo", d, heads),
            f"l{i}_ffn": Group(f"l{i}_ffn", "ffn", ffn, 1),
        }
    b = _Builder(model, groups)
    for i, layer in enumerate(layers):
        _layer_groups(b, fam, layer, i)
    norms = _outer_slots(b, model, layers, d)
    missing = [n for n, p in layers.named_parameters() if b.names[id(p)] not in b.covered]
    if missing:
        raise ModelError(f"Layer parameters without a pruning rule: {missing[:4]}.")
    base = model.base_model_prefix
    attention = [
        n for n, m in model.named_modules() if n.endswith(f".{fam.attention}") and hasattr(m, "scaling")
    ]
    if len(attention) != len(layers) or not all(n.startswith(base) for n in attention):
        raise ModelError("Could not find one attention module with a 'scaling' attribute per layer.")
    return PrunableUnits(
        groups, norms, attention, fam.attention, hidden_key, ffn_key, heads, d // heads, ffn,
        fam.attention_widths,
    )  # fmt: skip


def exported_parameters(model: PreTrainedModel, units: PrunableUnits, head_dim: int, ffn: int) -> int:
    """Parameters of the model sliced to ``head_dim`` per head and ``ffn`` (tied tensors counted once)."""
    kept = units.kept_sizes(head_dim, ffn)
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    for key, group in units.groups.items():
        for slot in group.slots:
            shapes[slot.param][slot.axis] -= group.size - kept[key]
    return sum(math.prod(s) for s in shapes.values())


def resolve_targets(
    model: PreTrainedModel,
    units: PrunableUnits,
    *,
    hidden: int | None,
    ffn: int | None,
    ratio: float | None,
    params: int | None,
) -> tuple[int, int]:
    """The target ``(head_dim, ffn)`` from widths, a width ratio or a parameter budget.

    Args:
        model: The full-width student.
        units: Its prunable units.
        hidden: Target hidden width; must be a multiple of the (kept) number of heads.
        ffn: Target FFN width (default: scaled like the hidden width).
        ratio: Keep this share of every width (per-head width rounded to the nearest integer).
        params: Parameter budget: the widest model at the teacher's FFN/hidden ratio that fits.

    Raises:
        ConfigError: A width is out of range, not a multiple of the heads, or the budget is too small.
    """
    h, dh, f = units.num_heads, units.head_dim, units.ffn
    if params is not None:
        for k in range(dh, 0, -1):
            f_k = max(1, round(f * k / dh))
            if exported_parameters(model, units, k, f_k) <= params:
                return k, f_k
        raise ConfigError(f"method.target_params={params} is below the smallest prunable model.")
    if ratio is not None:
        k = max(1, round(dh * ratio))
        return k, max(1, round(f * ratio))
    width = hidden if hidden is not None else h * dh
    if width % h or not 0 < width <= h * dh:
        raise ConfigError(
            f"method.target_hidden_size={width} must be a multiple of the {h} attention heads in "
            f"1..{h * dh}: a standard checkpoint has uniform heads spanning the hidden width "
            f"(nearest: {max(h, h * round(width / h))})."
        )
    k = width // h
    f_k = ffn if ffn is not None else max(1, round(f * k / dh))
    if not 0 < f_k <= f:
        raise ConfigError(f"method.target_intermediate_size={f_k} must be in 1..{f}.")
    return k, f_k
