"""Physical slicing of a masked model into a standard Hugging Face checkpoint of the kept widths.

The sliced model is a new instance of the model's own class with the hidden and FFN widths of its
config set to the kept counts, so it loads with ``AutoModel*.from_pretrained`` and no custom code. Its
outputs equal the masked model's (`distil.pruning.platon`: pruned entries are zero and LayerNorm
statistics run over the kept dims, which is what a narrower LayerNorm computes).

Attention scale: a stock attention module scales scores by ``1/sqrt(head_dim)`` of its own config, while
the masked model keeps whatever its modules' ``scaling`` says (the teacher's ``1/sqrt(full head dim)``
by default). The ratio is folded into the query weights and bias, which is exact:
``(c W_q x + c b_q) . k * s_new = (W_q x + b_q) . k * s_live`` with ``c = s_live / s_new``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from distil.pruning.units import Group, PrunableUnits, Slot

__all__ = ["Cut", "cut_in_place", "kept_widths", "narrow_in_place", "sliced_model"]


def kept_widths(units: PrunableUnits, masks: Mapping[str, Tensor]) -> dict[str, int]:
    """The widths ``masks`` keep, named as `PrunableUnits.full_widths` names them.

    Raises:
        ValueError: The masks do not describe a standard model (uneven heads, widths differing between
            layers, or attention widths other than the hidden width where they must be equal).
    """
    counts = {k: int(m.sum().item()) for k, m in masks.items()}
    by_kind: dict[str, set[int]] = defaultdict(set)
    for key, group in units.groups.items():
        by_kind[group.kind].add(counts[key])
    per_head = {
        v
        for k, g in units.groups.items()
        if g.kind in ("qk", "vo")
        for v in masks[k].view(g.heads, -1).sum(-1).tolist()
    }
    uniform = all(len(v) == 1 for v in by_kind.values()) and len(per_head) <= 1
    if units.kv_groups and uniform:
        return {"kv_heads": by_kind["kv"].pop(), "hidden": counts["hidden"], "ffn": by_kind["ffn"].pop()}
    if not units.kv_groups and uniform and by_kind["qk"] == by_kind["vo"] == {counts["hidden"]}:
        return {"head_dim": counts["hidden"] // units.num_heads, "ffn": by_kind["ffn"].pop()}
    raise ValueError(f"Masks do not describe a standard model: {counts}.")


def _index(units: PrunableUnits) -> dict[str, dict[int, list[tuple[Group, Slot]]]]:
    by_param: dict[str, dict[int, list[tuple[Group, Slot]]]] = defaultdict(lambda: defaultdict(list))
    for group in units.groups.values():
        for slot in group.slots:
            by_param[slot.param][slot.axis].append((group, slot))
    return by_param


def _axis_index(
    t: Tensor, axis: int, entries: list[tuple[Group, Slot]], kept: Mapping[str, Tensor]
) -> Tensor:
    """Indices of ``t``'s entries along ``axis`` that the kept units of its slots' groups keep."""
    entries = sorted(entries, key=lambda e: e[1].segment)
    if sum(g.size * s.span for g, s in entries) != t.shape[axis]:
        raise ValueError(f"Slots do not cover axis {axis} of a {tuple(t.shape)} tensor.")
    parts = []
    for g, s in entries:
        units = kept[g.key].to(t.device)
        within = torch.arange(s.span, device=t.device)
        parts.append(s.segment * g.size * s.span + (units[:, None] * s.span + within).flatten())
    return torch.cat(parts)


def _slice(t: Tensor, axes: Mapping[int, list[tuple[Group, Slot]]], kept: Mapping[str, Tensor]) -> Tensor:
    for axis, entries in axes.items():
        t = t.index_select(axis, _axis_index(t, axis, entries, kept))
    return t


@torch.no_grad()
def sliced_model(
    model: PreTrainedModel, units: PrunableUnits, masks: Mapping[str, Tensor]
) -> PreTrainedModel:
    """A new model of ``model``'s class holding only the kept units, with the attention scale folded in.

    Args:
        model: The masked model (unchanged).
        units: Its prunable units.
        masks: One 0/1 mask per group of ``units``.

    Returns:
        The sliced model, on ``model``'s device and dtype, in eval mode.
    """
    widths = kept_widths(units, masks)
    kept = {k: m.nonzero().flatten() for k, m in masks.items()}
    config = copy.deepcopy(model.config)
    for key, width in units.config_values(widths).items():
        setattr(config, key, width)
    model_class: Any = type(model)  # transformers' decorated __init__ is opaque to type checkers
    new: PreTrainedModel = model_class(config).to(device=model.device, dtype=model.dtype).eval()
    by_param = _index(units)
    tensors = {n: _slice(p.detach(), by_param.get(n, {}), kept) for n, p in model.named_parameters()}
    live, fresh = dict(model.named_modules()), dict(new.named_modules())
    for i, name in enumerate(units.attention if not units.kv_groups else ()):  # decoder heads keep width
        factor = float(live[name].scaling) / float(fresh[name].scaling)
        for slot in units.groups[f"l{i}_qk"].slots:
            if slot.query and factor != 1.0:
                width = len(kept[f"l{i}_qk"])
                tensors[slot.param].narrow(slot.axis, slot.segment * width, width).mul_(factor)
    params = dict(new.named_parameters())
    if set(params) != set(tensors):
        raise ValueError(f"Sliced model parameters differ: {sorted(set(params) ^ set(tensors))[:4]}.")
    for name, value in tensors.items():
        params[name].copy_(value)
    buffers = dict(new.named_buffers())
    for name, value in model.named_buffers():
        if name in buffers and buffers[name].shape == value.shape:
            buffers[name].copy_(value)
    hidden = int(getattr(new.config, units.hidden_key))
    for module in new.modules():
        if isinstance(module, nn.Embedding):
            _rescale_embedding(module, units.groups["hidden"].size, hidden)
    return new


def _set_widths(model: PreTrainedModel, units: PrunableUnits, widths: Mapping[str, int]) -> None:
    """The width attributes that modules and the config read, set from the (narrowed) weights."""
    old_hidden = units.groups["hidden"].size
    values = units.config_values(widths)
    for key, value in values.items():
        setattr(model.config, key, value)
    hidden = values[units.hidden_key]
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, Conv1D):
            module.nx, module.nf = module.weight.shape
        elif isinstance(module, nn.Embedding):
            module.embedding_dim = module.weight.shape[1]
            _rescale_embedding(module, old_hidden, hidden)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)
    modules = dict(model.named_modules())
    for name in units.attention:
        for attr, kind in units.attention_widths:
            setattr(modules[name], attr, hidden // units.num_heads if kind == "head_dim" else hidden)


def _rescale_embedding(module: nn.Embedding, old_hidden: int, hidden: int) -> None:
    """Gemma multiplies its embeddings by ``sqrt(hidden_size)``, set from the config when built.

    A checkpoint of the narrowed width rebuilds it from its own config, so the live model takes the
    same factor at the prune event; the export then reloads exactly.
    """
    scale = getattr(module, "embed_scale", None)
    if isinstance(scale, Tensor) and abs(float(scale) - old_hidden**0.5) < 1e-3 * old_hidden**0.5:
        scale.fill_(hidden**0.5)
        if hasattr(module, "scalar_embed_scale"):
            module.scalar_embed_scale = hidden**0.5


Cut = Callable[[nn.Parameter, int, Tensor], None]


@torch.no_grad()
def cut_in_place(param: nn.Parameter, axis: int, index: Tensor) -> None:
    """Keep the entries ``index`` of ``param`` along ``axis`` (one process's parameter; the object stays)."""
    param.data = param.data.index_select(axis, index.to(param.device))


@torch.no_grad()
def narrow_in_place(
    model: PreTrainedModel, units: PrunableUnits, kept: Mapping[str, Tensor], cut: Cut = cut_in_place
) -> tuple[PrunableUnits, list[tuple[str, int, Tensor]]]:
    """Narrow ``model`` itself to the ``kept`` units of each group (indices into the group's current units).

    Modules and parameter objects stay (an optimizer, gradient hooks and tied weights keep referring to
    them); each parameter's data becomes the kept entries, and the widths the modules and the config
    read are set to match, so the model computes what `sliced_model` of the same masks computes, minus
    the folded attention scale: the live ``scaling`` of each attention module is kept as it is.
    ``cut`` does the cutting (`distil.types.Runtime.cut_parameter`: under FSDP it gathers and re-shards).

    Returns:
        The prunable units of the narrowed model (group sizes, head and FFN widths), and
        ``(parameter name, axis, kept indices)`` for every axis cut, in the order applied.
    """
    sizes = {key: len(index) for key, index in kept.items()}
    masks = {}
    for key, group in units.groups.items():
        masks[key] = torch.zeros(group.size)
        masks[key][kept[key].cpu()] = 1.0
    widths = kept_widths(units, masks)  # raises unless the kept units describe a standard model
    params = dict(model.named_parameters())
    cuts = []
    for name, axes in _index(units).items():
        param = params[name]
        for axis, entries in axes.items():
            index = _axis_index(param, axis, entries, kept)
            cut(param, axis, index)
            cuts.append((name, axis, index))
    _set_widths(model, units, widths)
    groups = {k: dataclasses.replace(g, size=sizes[k]) for k, g in units.groups.items()}
    if units.kv_groups:
        narrowed = dataclasses.replace(
            units, groups=groups, num_heads=widths["kv_heads"] * units.queries_per_kv, ffn=widths["ffn"]
        )
    else:
        narrowed = dataclasses.replace(units, groups=groups, head_dim=widths["head_dim"], ffn=widths["ffn"])
    return narrowed, cuts
