"""HomoDistil's checkpointed pruning state: a 0/1 mask per group and PLATON's two EMAs per scored parameter.

Decoders also keep, per layer, which of the teacher's KV groups each remaining group descends from, so
attention terms compare a student head with the teacher head it started as.

`distil.pruning.platon.Pruner` updates it; the method's ``state_dict`` saves it with every checkpoint.
With slicing (the default) its tensors shrink with the model at each prune event (`PruneState.narrow`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from distil.pruning.units import PrunableUnits

__all__ = ["PruneState"]


def _key(name: str) -> str:
    return name.replace(".", "-")  # one level of keys: a parameter's dots would read as nesting


class PruneState:
    """Checkpointed pruning state: one 0/1 mask per group and the two PLATON EMAs per scored parameter.

    Plain tensors, not parameters: nothing here is trained. They follow the model to its device on the
    first step (`to`).
    """

    def __init__(self, model: PreTrainedModel, units: PrunableUnits) -> None:
        params = dict(model.named_parameters())
        scored = sorted({s.param for g in units.groups.values() for s in g.slots})
        self.masks: dict[str, Tensor] = {k: torch.ones(g.size) for k, g in units.groups.items()}
        # float32 whatever the model's dtype: the EMAs average many small terms.
        self.ipt: dict[str, Tensor] = {n: torch.zeros(params[n].shape) for n in scored}
        self.unc: dict[str, Tensor] = {n: torch.zeros(params[n].shape) for n in scored}
        # int64 indices into the teacher's KV groups (float32 would be exact too, but indices are ints).
        self.origins: dict[str, Tensor] = {
            k: torch.arange(g.size) for k, g in units.groups.items() if g.kind == "kv"
        }

    def to(self, device: torch.device) -> None:
        """Move every tensor to ``device`` (a no-op when they are there)."""
        for table in (self.masks, self.ipt, self.unc, self.origins):
            for key, value in table.items():
                if value.device != device:
                    table[key] = value.to(device)

    def release_scores(self) -> None:
        """Drop the EMAs once the widths are final.

        They are twice the model's size and would otherwise be written to every later checkpoint.
        """
        for table in (self.ipt, self.unc):
            for key, value in table.items():
                table[key] = value.new_zeros(0)

    def _tables(self) -> dict[str, dict[str, Tensor]]:
        tables = {"masks": self.masks, "ipt": self.ipt, "unc": self.unc}
        return tables | ({"origin": self.origins} if self.origins else {})

    def state_dict(self) -> dict[str, Tensor]:
        """Every tensor, keyed ``masks.<group>``, ``ipt.<param>``, ``unc.<param>``, ``origin.<group>``.

        Parameter dots are written as dashes; origins exist for KV groups only.
        """
        return {f"{name}.{_key(k)}": v for name, table in self._tables().items() for k, v in table.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state_dict`` returned (released EMAs come back empty).

        Raises:
            ValueError: Keys differ, or a tensor's shape is not the current one (nor empty, for EMAs).
        """
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ValueError(f"Pruning state keys differ: missing {sorted(set(expected) - set(state))[:3]}.")
        for key, value in state.items():
            if value.shape != expected[key].shape and not (
                value.numel() == 0 and key[:4] in ("ipt.", "unc.")
            ):
                raise ValueError(
                    f"Pruning state {key}: shape {tuple(value.shape)}, not {tuple(expected[key].shape)}."
                )
        for name, table in self._tables().items():
            for key in table:
                table[key] = state[f"{name}.{_key(key)}"].clone()

    def narrow(self, cuts: list[tuple[str, int, Tensor]], kept: dict[str, Tensor]) -> None:
        """Cut the EMAs like their parameters and the origins like their groups; masks all ones anew.

        Args:
            cuts: ``(parameter, axis, kept entries)`` of every cut.
            kept: The kept units of every group (indices into its current units).
        """
        sizes = {key: len(index) for key, index in kept.items()}
        for key in self.origins:
            self.origins[key] = self.origins[key].index_select(0, kept[key].to(self.origins[key].device))
        for name, axis, index in cuts:
            for table in (self.ipt, self.unc):
                if table[name].numel():  # released EMAs stay empty
                    table[name] = table[name].index_select(axis, index.to(table[name].device))
        for key, size in sizes.items():
            self.masks[key] = self.masks[key].new_ones(size)
