"""Structured pruning units of a Transformer, target widths and parameter counts (HomoDistil, one-shot).

A *group* is a set of units pruned together under one 0/1 mask; every parameter axis that a unit touches
is a *slot* of its group, so a unit always disappears from every matrix at once. Two schemes
(`distil.models.families.PruningLayout.scheme`):

``head_dim`` (BERT, RoBERTa, XLM-R, GPT-2):

- ``hidden``: the residual-stream dims, one mask for the whole model: every embedding table's columns,
  every LayerNorm, each layer's input rows of Q/K/V and the first FFN matrix, output rows (and biases)
  of the attention output and the second FFN matrix, and the heads (MLM transform, pooler, classifier,
  LM decoder tied to the word embeddings).
- ``l<i>_qk``: attention dims of layer ``i``, Q and K tied (a dim only counts if it survives in both).
- ``l<i>_vo``: value dims of layer ``i`` with the matching input columns of the attention output.
- ``l<i>_ffn``: FFN neurons of layer ``i``: first-matrix row and bias with the second-matrix column.

Attention groups keep the same number of dims in every head, and the hidden width is always
``heads * head_dim``: a stock checkpoint of these families can only express uniform heads whose widths
add up to the hidden size.

``kv_groups`` (Llama, Mistral, Qwen2/3, Gemma 2/3, OLMo-2):

- ``hidden``: as above, with every RMSNorm over the hidden width (the LM head tied or not).
- ``l<i>_kv``: the KV groups of layer ``i``; one unit is a key head, a value head, the query heads that
  read them and those heads' columns of the output projection (a slot *spans* several entries per unit).
- ``l<i>_ffn``: SwiGLU channels: gate and up rows with the down column.

Heads keep their width (RoPE rotates pairs of dims within a head), so the hidden width is free of the
heads. Every layer keeps as many units of each kind (a config holds one number per width), so every
intermediate model stays exportable (`distil.pruning.slicing`). Masks, scores, the cubic schedule and
selection live in `distil.pruning.platon`; importance from calibration data in `distil.pruning.oneshot`.

Widths are named: ``head_dim`` and ``ffn`` in the first scheme, ``kv_heads``, ``hidden`` and ``ffn`` in
the second (`PrunableUnits.full_widths`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
        span: Consecutive entries of the axis that one unit covers (a KV group's query rows: many).
    """

    param: str
    axis: int
    segment: int = 0
    query: bool = False
    span: int = 1


@dataclass
class Group:
    """Units pruned under one mask: ``hidden``, ``l<i>_qk``, ``l<i>_vo``, ``l<i>_kv`` or ``l<i>_ffn``.

    ``heads`` > 1 splits the units into that many equal blocks that keep equal counts (dims per head).
    """

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
        layer_norms: Names of the norms over the hidden stream.
        attention: Name of each layer's attention module (the one with a ``scaling`` attribute).
        attention_path: Path of that module inside one layer.
        hidden_key: Config key of the hidden width (``hidden_size``, ``n_embd``).
        ffn_key: Config key of the FFN width (``intermediate_size``, ``n_inner``).
        num_heads: Attention heads (``head_dim`` scheme: never pruned; ``kv_groups``: the current count).
        head_dim: Per-head width (the model's current one: a narrowed model gets narrowed units).
        ffn: FFN width.
        attention_widths: Attributes of the attention module that hold a width, each with what it holds
            (``head_dim`` or ``hidden``): narrowing a model in place sets them (`distil.pruning.slicing`).
        scheme: ``head_dim`` or ``kv_groups`` (module docstring).
        queries_per_kv: Query heads per KV group (``kv_groups``; 1 otherwise).
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
    scheme: str = "head_dim"
    queries_per_kv: int = 1

    @property
    def kv_groups(self) -> bool:
        """Whole KV groups are the attention units (decoders)."""
        return self.scheme == "kv_groups"

    def full_widths(self) -> dict[str, int]:
        """The model's current widths by name (module docstring)."""
        if self.kv_groups:
            kv = self.num_heads // self.queries_per_kv
            return {"kv_heads": kv, "hidden": self.groups["hidden"].size, "ffn": self.ffn}
        return {"head_dim": self.head_dim, "ffn": self.ffn}

    def kept_sizes(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Units each group keeps at ``widths`` (named as `full_widths` names them)."""
        if self.kv_groups:
            by_kind = {"kv": widths["kv_heads"], "hidden": widths["hidden"], "ffn": widths["ffn"]}
            return {k: by_kind[g.kind] for k, g in self.groups.items()}
        attn = self.num_heads * widths["head_dim"]
        return {k: widths["ffn"] if g.kind == "ffn" else attn for k, g in self.groups.items()}

    def config_values(self, widths: Mapping[str, int]) -> dict[str, int]:
        """The config entries of a model at ``widths`` (what an exported checkpoint's config holds)."""
        if self.kv_groups:
            return {
                self.hidden_key: widths["hidden"],
                self.ffn_key: widths["ffn"],
                "num_key_value_heads": widths["kv_heads"],
                "num_attention_heads": widths["kv_heads"] * self.queries_per_kv,
                "head_dim": self.head_dim,  # no longer hidden / heads: written out
            }
        return {self.hidden_key: self.num_heads * widths["head_dim"], self.ffn_key: widths["ffn"]}


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

    def add(
        self, key: str, param: object, axis: int, segment: int = 0, query: bool = False, span: int = 1
    ) -> None:
        if not isinstance(param, torch.Tensor):  # a module without a bias
            return
        slot = Slot(self.names[id(param)], axis, segment, query, span)
        if slot not in self.groups[key].slots:
            self.groups[key].slots.append(slot)
        self.covered.add(slot.param)


def _layer_groups(
    b: _Builder, fam: PruningLayout, layer: nn.Module, i: int, spans: Mapping[str, int]
) -> None:
    out_axis, in_axis = (1, 0) if fam.conv1d else (0, 1)
    for proj in fam.projections:
        module = layer.get_submodule(proj.path)
        width = spans[proj.span]
        for segment, kind in enumerate(proj.out):
            key = "hidden" if kind == "hidden" else f"l{i}_{kind}"
            seg = segment if kind != "hidden" else 0
            query, n = proj.query == segment, 1 if kind == "hidden" else width
            b.add(key, module.weight, out_axis, seg, query, n)
            b.add(key, getattr(module, "bias", None), 0, seg, query, n)
        if proj.inp is not None:
            n = 1 if proj.inp == "hidden" else width
            b.add("hidden" if proj.inp == "hidden" else f"l{i}_{proj.inp}", module.weight, in_axis, span=n)
    for path in fam.head_norms:  # one head wide whatever is pruned
        if path in dict(layer.named_modules()):
            b.covered.update(b.names[id(p)] for p in layer.get_submodule(path).parameters())


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def _outer_slots(
    b: _Builder, model: PreTrainedModel, layers: nn.ModuleList, d: int, claimed: set[int]
) -> list[str]:
    """Embeddings, norms over the hidden stream and heads: every module outside the layers' projections.

    ``claimed`` holds the modules a layer's layout already placed (projections, per-head norms).
    """
    inside = {id(m) for m in layers.modules()}
    norms = []
    for name, module in model.named_modules():
        if id(module) in claimed:
            continue
        if _is_norm(module):
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (d,):
                raise ModelError(f"Norm {name!r} is not over the hidden width {d}; cannot prune it.")
            norms.append(name)
            b.add("hidden", weight, 0)
            b.add("hidden", getattr(module, "bias", None), 0)
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


def _claimed(fam: PruningLayout, layers: nn.ModuleList) -> set[int]:
    claimed = set()
    for layer in layers:
        present = dict(layer.named_modules())
        claimed |= {
            id(present[p]) for p in (*(q.path for q in fam.projections), *fam.head_norms) if p in present
        }
    return claimed


def prunable_units(model: PreTrainedModel) -> PrunableUnits:
    """Every coupled unit of a model of a family with a pruning layout (any head class).

    Raises:
        ConfigError: The family is not supported.
        ModelError: A module the tables do not know holds hidden-width parameters, or the widths are
            ambiguous (a head whose output size equals the hidden size cannot be told from a hidden map).
    """
    (fam, family), config = _family(model), model.config
    hidden_key, heads_key, ffn_key = family.width_keys
    d, heads = int(getattr(config, hidden_key)), int(getattr(config, heads_key))
    layers = get_layers(model)
    ffn_out = next(p for p in fam.projections if p.inp == "ffn")  # the matrix that reads the FFN width
    ffn_weight = layers[0].get_submodule(ffn_out.path).weight
    assert isinstance(ffn_weight, torch.Tensor)
    ffn = int(ffn_weight.shape[0 if fam.conv1d else 1])
    if int(getattr(config, "num_labels", 0) or 0) == d or int(config.vocab_size) == d:
        raise ModelError(f"Ambiguous widths: the label or vocabulary size equals the hidden size {d}.")
    groups = {"hidden": Group("hidden", "hidden", d, 1)}
    if fam.scheme == "kv_groups":
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or d // heads)
        for i in range(len(layers)):
            groups |= {
                f"l{i}_kv": Group(f"l{i}_kv", "kv", kv, 1),
                f"l{i}_ffn": Group(f"l{i}_ffn", "ffn", ffn, 1),
            }
        spans = {"dim": 1, "query_group": heads // kv * head_dim, "kv_head": head_dim}
    else:
        kv, head_dim = heads, d // heads
        for i in range(len(layers)):
            groups |= {
                f"l{i}_qk": Group(f"l{i}_qk", "qk", d, heads),
                f"l{i}_vo": Group(f"l{i}_vo", "vo", d, heads),
                f"l{i}_ffn": Group(f"l{i}_ffn", "ffn", ffn, 1),
            }
        spans = {"dim": 1, "query_group": 1, "kv_head": 1}
    b = _Builder(model, groups)
    for i, layer in enumerate(layers):
        _layer_groups(b, fam, layer, i, spans)
    norms = _outer_slots(b, model, layers, d, _claimed(fam, layers))
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
        groups, norms, attention, fam.attention, hidden_key, ffn_key, heads, head_dim, ffn,
        fam.attention_widths, fam.scheme, heads // kv,
    )  # fmt: skip


def exported_parameters(model: PreTrainedModel, units: PrunableUnits, widths: Mapping[str, int]) -> int:
    """Parameters of the model sliced to ``widths`` (tied tensors counted once)."""
    kept = units.kept_sizes(widths)
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    for key, group in units.groups.items():
        for slot in group.slots:
            shapes[slot.param][slot.axis] -= (group.size - kept[key]) * slot.span
    return sum(math.prod(s) for s in shapes.values())


def _scaled(full: Mapping[str, int], ratio: float) -> dict[str, int]:
    return {k: max(1, round(v * ratio)) for k, v in full.items()}


def resolve_targets(
    model: PreTrainedModel,
    units: PrunableUnits,
    *,
    hidden: int | None,
    ffn: int | None,
    ratio: float | None,
    params: int | None,
    kv_heads: int | None = None,
) -> dict[str, int]:
    """The target widths (named as `PrunableUnits.full_widths`) from widths, a ratio or a parameter budget.

    Args:
        model: The full-width student.
        units: Its prunable units.
        hidden: Target hidden width; with the ``head_dim`` scheme a multiple of the number of heads.
        ffn: Target FFN width (default: scaled like the hidden width).
        ratio: Keep this share of every width (per-head width, or KV groups, rounded to the nearest).
        params: Parameter budget: the widest model with every width scaled alike that fits.
        kv_heads: Target KV groups (``kv_groups`` scheme only; default: all of them).

    Raises:
        ConfigError: A width is out of range, not a multiple of the heads, or the budget is too small.
    """
    if units.kv_groups:
        return _decoder_targets(model, units, hidden=hidden, ffn=ffn, ratio=ratio, params=params, kv=kv_heads)
    if kv_heads is not None:
        raise ConfigError(
            "method.target_num_key_value_heads prunes KV groups of decoders; this model's heads keep their "
            "number (its per-head width is pruned instead)."
        )
    h, dh, f = units.num_heads, units.head_dim, units.ffn
    if params is not None:
        for k in range(dh, 0, -1):
            widths = {"head_dim": k, "ffn": max(1, round(f * k / dh))}
            if exported_parameters(model, units, widths) <= params:
                return widths
        raise ConfigError(f"method.target_params={params} is below the smallest prunable model.")
    if ratio is not None:
        return {"head_dim": max(1, round(dh * ratio)), "ffn": max(1, round(f * ratio))}
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
    return {"head_dim": k, "ffn": f_k}


_BUDGET_STEPS = 1000  # ratios tried for a parameter budget: 1.000, 0.999, ... 0.001


def _decoder_targets(
    model: PreTrainedModel,
    units: PrunableUnits,
    *,
    hidden: int | None,
    ffn: int | None,
    ratio: float | None,
    params: int | None,
    kv: int | None,
) -> dict[str, int]:
    full = units.full_widths()
    if params is not None:
        for n in range(_BUDGET_STEPS, 0, -1):
            widths = _scaled(full, n / _BUDGET_STEPS)
            if exported_parameters(model, units, widths) <= params:
                return widths
        raise ConfigError(f"method.target_params={params} is below the smallest prunable model.")
    if ratio is not None:
        return _scaled(full, ratio)
    d = hidden if hidden is not None else full["hidden"]
    widths = {
        "kv_heads": kv if kv is not None else full["kv_heads"],
        "hidden": d,
        "ffn": ffn if ffn is not None else max(1, round(full["ffn"] * d / full["hidden"])),
    }
    fields = {"kv_heads": "target_num_key_value_heads", "hidden": "target_hidden_size",
              "ffn": "target_intermediate_size"}  # fmt: skip
    for name, value in widths.items():
        if not 0 < value <= full[name]:
            raise ConfigError(f"method.{fields[name]}={value} must be in 1..{full[name]}.")
    return widths
