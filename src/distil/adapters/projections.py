"""Method-owned, per-token maps on captured hidden states: TED's filters and LWD's projections.

The maps are plain ``nn.Module``s held by a method and applied to ``Features.hidden_states``, so no
Hugging Face modeling file is forked. They are saved by the loop as ``method.safetensors`` beside the
exported student; `load_projections` reads them back for a later stage, checking layers and shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from distil.errors import ConfigError

__all__ = ["LayerProjections", "activation_of", "load_projections"]

Kind = Literal["linear", "mlp"]


def activation_of(config: PretrainedConfig) -> str:
    """The name of the model's FFN activation (``hidden_act``, or GPT-2's ``activation_function``)."""
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None) or "gelu"
    return str(name) if isinstance(name, str) and name in ACT2FN else "gelu"


def _make(in_dim: int, out_dim: int, kind: Kind, act: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    # TED's non-linear filter: Linear(d -> d), the model's activation, Linear(d -> d_f).
    return nn.Sequential(nn.Linear(in_dim, in_dim), ACT2FN[act], nn.Linear(in_dim, out_dim))


class LayerProjections(nn.Module):
    """One map ``[B, S, in_dim] -> [B, S, out_dim]`` per chosen layer, applied token by token.

    Attributes:
        layers: 1-indexed layers, in the order `forward` returns their outputs; a layer listed twice
            shares one map.
        in_dim: Width of the hidden states read.
        out_dim: Width of the outputs.
        maps: The modules, keyed ``layer_<n>`` (these names are the keys of the saved file).
    """

    def __init__(
        self, layers: Sequence[int], in_dim: int, out_dim: int, kind: Kind = "linear", act: str = "gelu"
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.maps = nn.ModuleDict(
            {f"layer_{n}": _make(in_dim, out_dim, kind, act) for n in dict.fromkeys(layers)}
        )

    def forward(self, hidden_states: Sequence[Tensor]) -> list[Tensor]:
        """Map ``hidden_states[n]`` for every ``n`` in ``layers``.

        Args:
            hidden_states: ``num_layers + 1`` tensors ``[B, S, in_dim]``; index 0 is the embedding output.

        Returns:
            One ``[B, S, out_dim]`` tensor per entry of ``layers``.
        """
        return [self.maps[f"layer_{n}"](hidden_states[n]) for n in self.layers]


def load_projections(target: LayerProjections, path: str, prefix: str, field: str) -> None:
    """Fill ``target`` from the ``prefix``-ed tensors of a ``method.safetensors`` file, in place.

    Args:
        target: Maps built for the layers and widths this run needs.
        path: The file, or a folder holding ``method.safetensors`` (an exported stage's ``student``).
        prefix: Key prefix of the maps in the file, e.g. ``"filters."``.
        field: Config field named in errors.

    Raises:
        ConfigError: The file is missing or unreadable, or its maps are for other layers, another
            filter type or other widths.
    """
    file = Path(path) / "method.safetensors" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigError(f"{field}={path!r}: no such file (expected a stage's method.safetensors).")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{field}={path!r} is not a readable safetensors file: {err}.") from err
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = target.state_dict()
    if set(found) != set(expected):
        have = sorted({k.split(".")[1] for k in found if k.startswith("maps.")})
        want = sorted({k.split(".")[1] for k in expected})
        what = (
            f"maps for {have or 'nothing'}, but this run needs {want} (check method.layer_map)"
            if have != want
            else f"tensors {sorted(found)}, but this run needs {sorted(expected)} (check method.filter_type)"
        )
        raise ConfigError(
            f"{field}={path!r} holds {what}; the file must come from a stage with the same models."
        )
    for key, value in expected.items():
        if found[key].shape != value.shape:
            raise ConfigError(
                f"{field}={path!r}: {key} has shape {tuple(found[key].shape)}, but this run needs "
                f"{tuple(value.shape)} (maps {target.in_dim} -> {target.out_dim}). Filter widths must match "
                "the model's hidden size and the output size (method.filter_dim, default: the teacher's "
                "hidden size) on both sides."
            )
    target.load_state_dict({k: v.to(expected[k].dtype) for k, v in found.items()})
