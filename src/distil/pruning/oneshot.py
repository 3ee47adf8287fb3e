"""One-shot structured pruning of a decoder from calibration data (Minitron-style), before distillation.

Importance is read from activations over a few calibration batches, in one forward pass per batch with
hooks (no gradients), following Muralidharan et al., "Compact Language Models via Pruning and Knowledge
Distillation" (2024), §2:

- hidden channels: the mean absolute output of every norm over the hidden stream, summed over the norms;
- SwiGLU channels of a layer: the mean absolute input of its down projection (``act(gate) * up``);
- KV groups of a layer: the mean L2 norm of each query head's output (the input of the output projection,
  per head), summed over the query heads of the group;
- layers (depth): ``cosine``: ``1 - cos(input, output)`` of the block, averaged over tokens (the block
  importance of ShortGPT, Men et al. 2024), or ``perplexity``: the rise of the calibration loss when the
  block is skipped (Minitron's own), one extra pass per layer.

Means run over real (unpadded) tokens. The most important units of each group are kept (their original
order preserved), every layer keeping as many of each kind, then the least important layers are dropped;
the result is a standard checkpoint of the target config (`distil.pruning.slicing.narrow_in_place` and
`distil.models.students.student_from_layers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from distil.losses import next_token_labels, token_cross_entropy
from distil.models.families import get_layers
from distil.models.students import student_from_layers
from distil.pruning.slicing import narrow_in_place
from distil.pruning.units import PrunableUnits
from distil.types import Batch

__all__ = ["Importance", "LayerMetric", "importance", "prune_once"]

LayerMetric = Literal["cosine", "perplexity"]


@dataclass
class Importance:
    """Importance of every unit: one score per unit of each group, and one per layer.

    Attributes:
        groups: Scores by group key (`distil.pruning.units.PrunableUnits.groups`).
        layers: One score per layer (higher: more important).
        tokens: Real tokens the means ran over.
    """

    groups: dict[str, Tensor] = field(default_factory=dict)
    layers: Tensor = field(default_factory=lambda: torch.zeros(0))
    tokens: int = 0


def _first(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple) else value


class _Recorder:
    """Forward hooks that sum activation statistics over the real tokens of each batch."""

    def __init__(self, model: PreTrainedModel, units: PrunableUnits) -> None:
        self.units = units
        self.mask = torch.ones(0)
        self.sums: dict[str, Tensor] = {}
        self.cosine: dict[int, Tensor] = {}
        self._inputs: dict[int, Tensor] = {}
        self._handles: list[Any] = []
        modules = dict(model.named_modules())
        for name in units.layer_norms:
            self._handles.append(modules[name].register_forward_hook(self._norm_hook()))
        for i, layer in enumerate(get_layers(model)):
            o_proj = layer.get_submodule(f"{units.attention_path}.o_proj")
            self._handles.append(o_proj.register_forward_pre_hook(self._heads_hook(i)))
            self._handles.append(
                layer.get_submodule("mlp.down_proj").register_forward_pre_hook(self._ffn_hook(i))
            )
            self._handles.append(layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._layer_out(i)))

    def _add(self, key: str, per_token: Tensor) -> None:
        """Add ``per_token`` (``[batch, seq, units]``) summed over the real tokens."""
        weight = self.mask.to(per_token.device, torch.float32).unsqueeze(-1)
        total = (per_token.float() * weight).sum(dim=(0, 1))
        self.sums[key] = self.sums[key] + total if key in self.sums else total

    def _norm_hook(self) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            self._add("hidden", _first(output).abs())

        return hook

    def _heads_hook(self, i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            heads = x.view(*x.shape[:-1], -1, self.units.head_dim).float().norm(dim=-1)
            groups = heads.view(*heads.shape[:-1], -1, self.units.queries_per_kv).sum(-1)
            self._add(f"l{i}_kv", groups)

        return hook

    def _ffn_hook(self, i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            self._add(f"l{i}_ffn", args[0].abs())

        return hook

    def _layer_in(self, i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._inputs[i] = args[0] if args else kwargs["hidden_states"]

        return hook

    def _layer_out(self, i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            cos = nn.functional.cosine_similarity(self._inputs.pop(i).float(), _first(output).float(), dim=-1)
            weight = self.mask.to(cos.device, torch.float32)
            total = ((1.0 - cos) * weight).sum()
            self.cosine[i] = self.cosine[i] + total if i in self.cosine else total

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextmanager
def _skipped(layer: nn.Module) -> Iterator[None]:
    """The block returns its input unchanged (as if dropped from the model)."""

    def skip(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    handle = layer.register_forward_hook(skip, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _loss_terms(logits: Tensor, batch: Batch) -> tuple[float, int]:
    """The next-token loss of one batch summed over its scored tokens, and their number."""
    labels = next_token_labels(batch.input_ids, batch.attention_mask)
    n = int((labels != -100).sum())
    return float(token_cross_entropy(logits, labels)) * n, n


def _loss(model: PreTrainedModel, batches: Sequence[Batch]) -> float:
    total, count = 0.0, 0
    for batch in batches:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss, n = _loss_terms(logits, batch)
        total, count = total + loss, count + n
    return total / max(count, 1)


@torch.no_grad()
def importance(
    model: PreTrainedModel, units: PrunableUnits, batches: Sequence[Batch], layer_metric: LayerMetric
) -> Importance:
    """Activation importance of every unit and layer of ``model`` over ``batches`` (module docstring).

    Args:
        model: The decoder to prune (a causal LM; in eval mode for deterministic activations).
        units: Its prunable units (``kv_groups`` scheme).
        batches: Calibration batches on the model's device.
        layer_metric: How layers are scored.
    """
    recorder = _Recorder(model, units)
    tokens, loss, scored = 0, 0.0, 0
    try:
        for batch in batches:
            recorder.mask = batch.attention_mask
            tokens += int(batch.attention_mask.sum())
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            if layer_metric == "perplexity":  # the full model's loss, from this same pass
                batch_loss, n = _loss_terms(out.logits, batch)
                loss, scored = loss + batch_loss, scored + n
    finally:
        recorder.remove()
    groups = {k: v.cpu() / max(tokens, 1) for k, v in recorder.sums.items()}
    depth = len(get_layers(model))
    if layer_metric == "cosine":
        layers = torch.stack([recorder.cosine[i].cpu() for i in range(depth)]) / max(tokens, 1)
    else:
        base = loss / max(scored, 1)
        rises = []
        for layer in get_layers(model):
            with _skipped(layer):
                rises.append(_loss(model, batches) - base)
        layers = torch.tensor(rises)
    return Importance(groups, layers, tokens)


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores, in their original order (ties: the earlier unit)."""
    order = torch.argsort(-scores, stable=True)[:k]
    return order.sort().values


def prune_once(
    model: PreTrainedModel,
    units: PrunableUnits,
    scores: Importance,
    widths: dict[str, int],
    num_layers: int | None,
) -> tuple[PreTrainedModel, list[int]]:
    """``model`` cut to each group's best units at ``widths``, then to its best ``num_layers`` layers.

    The widths are cut in place (``model`` itself is narrowed: pass a copy to keep the original); dropping
    layers builds a new, shallower model from the narrowed one.

    Returns:
        The pruned model (a standard checkpoint of its class) and the kept layers, 1-indexed.
    """
    sizes = units.kept_sizes(widths)
    kept = {key: _top(scores.groups[key], sizes[key]) for key in units.groups}
    depth = len(get_layers(model))
    narrow_in_place(model, units, kept)
    layers = list(range(1, depth + 1))
    if num_layers is not None and num_layers < depth:
        layers = [int(i) + 1 for i in _top(scores.layers, num_layers)]
        return student_from_layers(model, layers), layers
    return model, layers
