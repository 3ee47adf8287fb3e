"""Masks, PLATON importance and the masked forward of a model being pruned (HomoDistil).

PLATON (Zhang et al., ICML 2022, https://arxiv.org/abs/2206.12562), per parameter: sensitivity
``I = |theta * dL/dtheta|``, its EMA ``I_bar <- b1 I_bar + (1 - b1) I`` and the uncertainty
``U_bar <- b2 U_bar + (1 - b2) |I - I_bar|``; the score is ``I_bar * U_bar`` (``I_bar`` alone when
``b2 = 1``), summed over every slot of a unit (`distil.pruning.units`).

Where the gradient is read: after the step's last backward and before the optimiser step
(`distil.methods.Method.on_gradients`), so with gradient accumulation it is the summed gradient of the
full step, and with several processes the gradient every engine has already averaged over them: every
process holds the same scores and masks, those of one process training the whole batch. A sharded
(FSDP) sensitivity is gathered whole. ``on_step_end`` then updates the EMAs, prunes on schedule and
re-applies the masks (Adam's moments would otherwise regrow pruned weights).

Two ways to drop what a prune event removes, equal up to float rounding:

- ``slicing`` (the default): the model is narrowed in place to the kept units at every prune event
  (`distil.pruning.slicing.narrow_in_place`), with its EMAs; the masks are then all ones at the new
  widths until the next event, and a step costs what a model of the current widths costs. The method
  returns the cuts so the loop cuts the optimizer's moments alike (`distil.types.Resize`).
- masks: the model keeps its full shapes; pruned rows and columns are zero (re-zeroed after every
  optimiser step), and forward hooks on its LayerNorms compute mean and variance over the kept hidden dims
  only, so the masked model computes exactly what the sliced one does. Every step costs the full width.

Masks and EMAs live in `distil.pruning.state.PruneState`, the method's non-trainable state (its
``state_dict``), so checkpoints save them and a resumed run continues the same schedule; with slicing
their sizes are the widths the model had, which a resumed run narrows its fresh copy to before the
weights load (`Pruner.restore`). The EMAs are emptied once the widths are final (``t_f``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from distil.pruning.slicing import Cut, cut_in_place, narrow_in_place
from distil.pruning.state import PruneState
from distil.pruning.units import Group, PrunableUnits

__all__ = ["Pruner", "cubic_keep"]


def cubic_keep(step: int, full: int, target: int, t_i: int, t_f: int) -> int:
    """Width kept after ``step``: ``full`` until ``t_i``, cubic down to ``target`` at ``t_f``, then held.

    ``keep(t) = target + (full - target) * (1 - (t - t_i) / (t_f - t_i))^3``, rounded to the nearest
    integer; non-increasing in ``t`` and exactly ``target`` from ``t_f`` on (PLATON's schedule,
    written as a width rather than a ratio). ``t_i == t_f`` prunes in one shot.
    """
    if step >= t_f:
        return target
    if step <= t_i:
        return full
    frac = (step - t_i) / (t_f - t_i)
    return target + round((full - target) * (1.0 - frac) ** 3)


class Pruner:
    """Drives the pruning of one model: records sensitivities, updates scores, prunes, masks.

    Args:
        model: The model being pruned (narrowed in place at prune events, or masked at full width).
        units: Its prunable units (`distil.pruning.units.prunable_units`).
        state: The checkpointed masks and EMAs (moved with the method's modules).
        target: The widths reached at ``t_f`` (named as `PrunableUnits.full_widths` names them).
        t_i: Last step at full width.
        t_f: Step at which the target widths are reached; widths are held afterwards.
        delta_t: Steps between mask updates in ``(t_i, t_f]`` (``t_f`` itself always updates).
        beta1: EMA constant of the sensitivity.
        beta2: EMA constant of the uncertainty; 1 scores by the smoothed sensitivity alone.
        scale_attention: Rescale attention scores to ``1/sqrt(kept head dim)`` as heads shrink, instead
            of keeping the teacher's ``1/sqrt(full head dim)``.
        slicing: Narrow the model at each prune event instead of masking it at full width.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        units: PrunableUnits,
        state: PruneState,
        target: dict[str, int],
        *,
        t_i: int,
        t_f: int,
        delta_t: int,
        beta1: float,
        beta2: float,
        scale_attention: bool,
        slicing: bool = True,
    ) -> None:
        self.model, self.units, self.state, self.target = model, units, state, target
        self.slicing = slicing
        # The schedule runs from the full widths whatever the model has been narrowed to.
        self.full = units.full_widths()
        self._full_hidden = units.groups["hidden"].size
        self.t_i, self.t_f, self.delta_t, self.beta1, self.beta2 = t_i, t_f, delta_t, beta1, beta2
        self.scale_attention = scale_attention
        self.recording = True
        self.cut: Cut = cut_in_place  # how a parameter is narrowed (`distil.types.Runtime.cut_parameter`)
        self._sens: dict[str, Tensor] = {}
        self._seen: tuple[int, ...] = ()
        self.kept: dict[str, int] = {}
        modules = dict(model.named_modules())
        self._attention = [modules[n] for n in units.attention]
        self._scaling = [float(m.scaling) for m in self._attention]
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(lambda _m, _a: self.sync())]
        if not slicing:  # a sliced model's norms run over its kept dims already
            for name in units.layer_norms:
                self._handles.append(modules[name].register_forward_hook(self._masked_norm))

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The scored parameters as the model holds them now (FSDP replaces them when it wraps)."""
        return {n: p for n, p in self.model.named_parameters() if n in self.state.ipt}

    # --- sensitivities and scores ---------------------------------------------------------------

    @torch.no_grad()
    def record_gradients(self, scale: float = 1.0) -> None:
        """Store ``|theta * grad|`` of every scored parameter from the step's (synchronised) gradients.

        Args:
            scale: Factor that undoes float16 loss scaling (``1 / scale`` of the ``GradScaler``).
        """
        if not self.recording:
            return
        for name, param in self.params.items():
            if param.grad is None:
                continue
            sens = torch.mul(param.detach(), param.grad.detach()).abs_()
            if isinstance(sens, DTensor):
                sens = sens.full_tensor()  # every process calls this alike: it gathers
            self._sens[name] = sens.float().mul_(scale)

    def update_scores(self) -> None:
        """Fold the latest sensitivities into the EMAs (parameters without a gradient count as 0)."""
        names = list(self.params)
        sens = [self._sens[n] if n in self._sens else torch.zeros_like(self.state.ipt[n]) for n in names]
        for name, value in zip(names, sens, strict=True):
            ipt, unc = self.state.ipt[name], self.state.unc[name]
            value = value.view_as(ipt).to(ipt.device)
            ipt.mul_(self.beta1).add_(value, alpha=1 - self.beta1)
            unc.mul_(self.beta2).add_((value - ipt).abs(), alpha=1 - self.beta2)
        self._sens = {}

    def unit_scores(self, group: Group) -> Tensor:
        """PLATON score of each unit of ``group``: ``I_bar * U_bar`` summed over all its slots."""
        total = torch.zeros(group.size, device=self.state.masks[group.key].device)
        for slot in group.slots:
            ipt = self.state.ipt[slot.param]
            score = ipt * self.state.unc[slot.param] if self.beta2 < 1 else ipt
            other = [a for a in range(score.ndim) if a != slot.axis]
            per_index = score.sum(dim=other) if other else score
            block = per_index.narrow(0, slot.segment * group.size * slot.span, group.size * slot.span)
            total += block.view(group.size, slot.span).sum(-1)
        return total

    # --- schedule and masks ---------------------------------------------------------------------

    def widths(self, step: int) -> dict[str, int]:
        """The widths the schedule prescribes after ``step``."""
        return {
            k: cubic_keep(step, full, self.target[k], self.t_i, self.t_f) for k, full in self.full.items()
        }

    def is_prune_step(self, step: int) -> bool:
        """Masks change every ``delta_t`` steps after ``t_i``, and at ``t_f``."""
        return step == self.t_f or (self.t_i < step < self.t_f and (step - self.t_i) % self.delta_t == 0)

    def prune(self, step: int) -> bool:
        """Shrink every group to the scheduled width, keeping the best-scored units that are still kept.

        Returns whether any mask changed.
        """
        changed = False
        kept = self.units.kept_sizes(self.widths(step))
        for key, group in self.units.groups.items():
            mask = self.state.masks[key]
            rows = mask.view(group.heads, -1)
            keep = kept[key] // group.heads
            if int(rows.sum(-1).min()) == keep:
                continue
            scores = self.unit_scores(group).view(group.heads, -1).masked_fill(rows == 0, -torch.inf)
            new = torch.zeros_like(rows).scatter_(1, scores.topk(keep, dim=1).indices, 1.0)
            assert bool((new <= rows).all()), "pruning must be monotone"
            mask.copy_(new.view(-1))
            changed = True
        return changed

    @torch.no_grad()
    def apply_masks(self, tables: tuple[dict[str, Tensor], ...] = ()) -> None:
        """Zero every pruned row, column and bias entry (after each optimiser step: Adam regrows them).

        Args:
            tables: Tensors shaped like the parameters to zero instead (the EMAs, at a prune event).
        """
        params = self.params
        for key, group in self.units.groups.items():
            mask = self.state.masks[key]
            for slot in group.slots:
                targets = [t[slot.param] for t in tables] if tables else [params[slot.param]]
                for tensor in targets:
                    if tensor.numel() == 0:  # released EMAs
                        continue
                    shape = [1] * tensor.ndim
                    shape[slot.axis] = group.size * slot.span
                    width = group.size * slot.span
                    block = tensor.narrow(slot.axis, slot.segment * width, width)
                    block.mul_(mask.repeat_interleave(slot.span).view(shape).to(tensor.dtype))

    @torch.no_grad()
    def on_step_end(self, step: int) -> list[tuple[str, int, Tensor]] | None:
        """EMA update (until ``t_f``, then the EMAs are released), pruning on schedule, then the drop.

        Slicing narrows the model to the kept units at a prune event and returns the cuts; masks zero the
        pruned entries after every step (AdamW would regrow them).
        """
        self.state.to(next(self.model.parameters()).device)
        if step <= self.t_f:
            self.update_scores()
        self._sens = {}
        self.recording = step < self.t_f
        pruned = self.is_prune_step(step) and self.prune(step)
        if step >= self.t_f:
            self.state.release_scores()
        cuts = None
        if not self.slicing:
            if pruned:
                # A unit's score sums its entries that are still in the model, as slicing has it: a pruned
                # entry's EMAs would otherwise linger in the scores of the units it was coupled to. Once
                # zeroed they stay 0 (a zero weight has sensitivity 0).
                self.apply_masks((self.state.ipt, self.state.unc))
            self.apply_masks()
        elif pruned:
            cuts = self._narrow({k: m.nonzero().flatten() for k, m in self.state.masks.items()})
        self.sync()
        return cuts

    def _narrow(self, kept: dict[str, Tensor]) -> list[tuple[str, int, Tensor]]:
        self.units, cuts = narrow_in_place(self.model, self.units, kept, self.cut)
        self.state.narrow(cuts, kept)
        return cuts

    def restore(self, sizes: dict[str, int]) -> list[tuple[str, int, Tensor]] | None:
        """Narrow the model to the group sizes a checkpoint's masks have, before its weights load.

        Which units are kept does not matter (the weights are overwritten); their number does. ``None``
        when the sizes are the current ones (a checkpoint before the first prune event, or of masks).

        Raises:
            ValueError: The groups differ from the units', or a size is not within the current one.
        """
        current = {k: g.size for k, g in self.units.groups.items()}
        if sizes == current:
            return None
        if set(sizes) != set(current) or any(not 0 < sizes[k] <= current[k] for k in current):
            raise ValueError(f"Pruning state sizes {sizes} do not fit this model's groups {current}.")
        device = self.state.masks["hidden"].device
        kept = {}
        for key, group in self.units.groups.items():  # the first units of every head: heads stay uniform
            per_head = torch.arange(sizes[key] // group.heads, device=device)
            kept[key] = (
                torch.arange(group.heads, device=device)[:, None] * (group.size // group.heads) + per_head
            ).flatten()
        return self._narrow(kept)

    # --- masked forward ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Refresh what is derived from the masks (kept counts, attention scaling) when they changed.

        Runs before every forward; masks change at prune events and when a checkpoint is loaded.
        """
        self.state.to(next(self.model.parameters()).device)
        seen = tuple(x for m in self.state.masks.values() for x in (m._version, m.data_ptr()))
        if seen == self._seen:
            return
        self._seen = seen
        self.kept = {k: int(m.sum().item()) for k, m in self.state.masks.items()}
        for i, module in enumerate(self._attention):
            factor = 1.0
            if self.scale_attention and not self.units.kv_groups:  # decoder heads keep their width
                factor = (self.full["head_dim"] * self.units.num_heads / self.kept[f"l{i}_qk"]) ** 0.5
            module.scaling = self._scaling[i] * factor

    def _masked_norm(self, module: nn.LayerNorm, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        kept = self.kept.get("hidden", self._full_hidden)
        if kept == self._full_hidden:
            return None  # nothing pruned yet: keep the module's own output (bitwise the teacher's)
        x = args[0]
        mask = self.state.masks["hidden"].to(x.dtype)
        mean = (x * mask).sum(-1, keepdim=True) / kept
        var = ((x - mean) * mask).pow(2).sum(-1, keepdim=True) / kept
        y = (x - mean) * torch.rsqrt(var + module.eps)
        return (y * module.weight + module.bias) * mask

    def remove(self) -> None:
        """Remove every hook from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
