"""One table of per-family module paths: where the layers and the Q/K/V projections live.

Paths are relative to ``model.base_model`` (layers) and to one layer (projections), so they hold for
every head class of a family (``AutoModel``, ``...ForSequenceClassification``, ``...ForCausalLM``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.errors import ConfigError, ModelError

__all__ = [
    "SUPPORTED",
    "ArchSpec",
    "arch_spec",
    "get_layers",
    "has_trained_lm_head",
    "layer_index",
    "num_layers",
    "submodule",
]

_LM_CLASSES = ("ForMaskedLM", "LMHeadModel", "ForCausalLM")


@dataclass(frozen=True)
class ArchSpec:
    """Where a family keeps what distillation needs.

    Attributes:
        layers: Path of the ``nn.ModuleList`` of Transformer blocks under ``model.base_model``.
        num_layers_key: Config attribute holding the depth.
        query: Path of the query projection inside one block (``None`` when Q/K/V are fused).
        key: Path of the key projection inside one block.
        value: Path of the value projection inside one block.
        fused_qkv: Path of a fused projection whose output is ``[Q | K | V]`` along the last axis (GPT-2).
        pre_norm: Path of the LayerNorm applied to the block input before the projections (pre-LN families).
        causal: Whether the model attends only to earlier positions.
        token_type_ids: Whether ``token_type_ids`` from the tokenizer should reach the model.
    """

    layers: str
    num_layers_key: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    fused_qkv: str | None = None
    pre_norm: str | None = None
    causal: bool = False
    token_type_ids: bool = False


_BERT_LIKE = ArchSpec(
    layers="encoder.layer",
    num_layers_key="num_hidden_layers",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    token_type_ids=True,
)
_LLAMA_LIKE = ArchSpec(
    layers="layers",
    num_layers_key="num_hidden_layers",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    pre_norm="input_layernorm",
    causal=True,
)

_SPECS: dict[str, ArchSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "deberta-v2": ArchSpec(
        layers="encoder.layer",
        num_layers_key="num_hidden_layers",
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        token_type_ids=True,
    ),
    "distilbert": ArchSpec(
        layers="transformer.layer",
        num_layers_key="n_layers",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
    ),
    "gpt2": ArchSpec(
        layers="h", num_layers_key="n_layer", fused_qkv="attn.c_attn", pre_norm="ln_1", causal=True
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}
SUPPORTED: tuple[str, ...] = tuple(_SPECS)


def arch_spec(model_or_config: PreTrainedModel | PretrainedConfig) -> ArchSpec:
    """Return the family's spec, or raise a ``ModelError`` naming the supported families."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", type(config).__name__)
    if model_type not in _SPECS:
        raise ModelError(
            f"Unsupported architecture {model_type!r}. Supported model types: {', '.join(SUPPORTED)}."
        )
    return _SPECS[model_type]


def submodule(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``'encoder.layer'``) below ``root``."""
    return root.get_submodule(path)


def get_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's Transformer blocks, in order."""
    layers = submodule(model.base_model, arch_spec(model).layers)
    assert isinstance(layers, nn.ModuleList)
    return layers


def num_layers(config: PretrainedConfig) -> int:
    """The depth recorded in a config of a supported family."""
    return int(getattr(config, arch_spec(config).num_layers_key))


def layer_index(config: PretrainedConfig, layer: int | None, field: str) -> int:
    """0-indexed position of 1-indexed ``layer`` (``None``: the last); a ``ConfigError`` names ``field``."""
    depth = num_layers(config)
    chosen = depth if layer is None else layer
    if not 1 <= chosen <= depth:
        raise ConfigError(f"{field} must be in 1..{depth} for this model, got {chosen}.")
    return chosen - 1


def has_trained_lm_head(model: PreTrainedModel) -> bool:
    """Whether the checkpoint carried a trained language-model head.

    It did if it was saved as a masked- or causal-LM class, or if it is a decoder whose output layer is
    tied to its (trained) input embeddings. Otherwise loading it with an LM head gives a random one.
    """
    architectures = list(getattr(model.config, "architectures", None) or [])
    tied = arch_spec(model).causal and bool(getattr(model.config, "tie_word_embeddings", False))
    return tied or any(a.endswith(_LM_CLASSES) for a in architectures)
