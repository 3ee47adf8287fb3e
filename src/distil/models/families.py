"""One record per model family (``model_type``): everything distil knows about a family's layout.

Every per-family fact lives in a `Family` record of ``FAMILIES``, and every module that needs one asks
here (`family_of`) instead of keeping its own table: adding a family is one record below and one tiny
config in ``tests/factories.py`` (the family test builds each declared family and checks every field).

Paths are relative to ``model.base_model`` (layers) and to one layer (projections), so they hold for every
head class of a family (``AutoModel``, ``...ForSequenceClassification``, ``...ForCausalLM``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.errors import ConfigError, ModelError
from distil.models.heads import head_of_architectures

__all__ = [
    "FAMILIES",
    "SUPPORTED",
    "Family",
    "PrunedProjection",
    "PruningLayout",
    "UnitSpan",
    "family_of",
    "get_layers",
    "has_trained_lm_head",
    "layer_index",
    "num_layers",
    "position_limit",
    "submodule",
]

# How a family bounds its input length: ``table``: an absolute position table of ``position_key`` rows;
# ``table_after_padding``: the same, but positions start after the padding index (RoBERTa);
# ``table_unless_relative``: a table only when ``position_biased_input`` (DeBERTa-v3 has none);
# ``rotary``: no table (longer inputs run; how well is the model's matter).
Positions = Literal["table", "table_after_padding", "table_unless_relative", "rotary"]

# How many entries of a projection's non-hidden axis one pruning unit covers: ``dim``: one (encoders and
# GPT-2 prune dims); ``query_group``: the query heads of one KV group (``n_rep * head_dim``);
# ``kv_head``: one key or value head (``head_dim``).
UnitSpan = Literal["dim", "query_group", "kv_head"]


@dataclass(frozen=True)
class PrunedProjection:
    """One linear map of a layer, as HomoDistil's structured pruning sees it.

    Attributes:
        path: Path inside one layer.
        out: The unit kind of each consecutive block of the output axis (``qk``, ``vo``, ``kv``, ``ffn``,
            ``hidden``).
        inp: The unit kind of the input axis (``None``: a norm's one-dimensional weight).
        query: The output block that holds the queries (the attention scale is folded into it at export).
        span: Entries of the non-hidden axis that one unit covers (see ``UnitSpan``).
    """

    path: str
    out: tuple[str, ...]
    inp: str | None
    query: int | None = None
    span: UnitSpan = "dim"


@dataclass(frozen=True)
class PruningLayout:
    """What HomoDistil's width pruning needs of a family (`distil.pruning.units`).

    Attributes:
        projections: Every linear map of a layer, with the units along each axis.
        attention: Path of the attention module inside one layer (the one with a ``scaling`` attribute).
        conv1d: Weights are stored ``[in, out]`` (GPT-2's Conv1D) instead of ``nn.Linear``'s ``[out, in]``.
        attention_widths: Attributes of the attention module that hold a width, each with what it holds
            (``head_dim`` or ``hidden``): narrowing a model in place sets them.
        scheme: ``head_dim``: every head keeps the same share of its dims and the hidden width is
            ``heads * head_dim`` (BERT, GPT-2); ``kv_groups``: whole KV groups go with their query heads,
            heads keep their width, and the hidden width is pruned on its own (decoders with RoPE, whose
            rotation pairs dims within a head, so a head cannot lose dims).
        head_norms: Per-head norms inside one layer (Qwen3's and Gemma 3's ``q_norm``/``k_norm``), one
            ``head_dim`` wide whatever is pruned: never cut.
    """

    projections: tuple[PrunedProjection, ...]
    attention: str
    conv1d: bool
    attention_widths: tuple[tuple[str, str], ...]
    scheme: Literal["head_dim", "kv_groups"] = "head_dim"
    head_norms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """Where a family keeps what distillation needs, and what it supports.

    Attributes:
        layers: Path of the ``nn.ModuleList`` of Transformer blocks under ``model.base_model``.
        num_layers_key: Config attribute holding the depth.
        width_keys: Config attributes of the hidden width, the attention heads and the FFN width.
        positions: How the family bounds its input length (see ``Positions``).
        position_key: Config attribute of the position table's size (``table*`` rules).
        query: Path of the query projection inside one block (``None`` when Q/K/V are fused).
        key: Path of the key projection inside one block.
        value: Path of the value projection inside one block.
        fused_qkv: Path of a fused projection whose output is ``[Q | K | V]`` along the last axis (GPT-2,
            Phi-3; K and V are ``num_key_value_heads`` heads wide).
        causal: Whether the model attends only to earlier positions.
        token_type_ids: Whether ``token_type_ids`` from the tokenizer should reach the model.
        pruning: HomoDistil's pruning layout, ``None`` when the family cannot be pruned yet.
        onnx_optimizer: onnxruntime's transformer-optimiser type that fuses the family's exported graph,
            ``None`` when it has none.
        attention_interface: The attention calls transformers' ``AttentionInterface`` (so its scores can
            be handed over as computed: `distil.adapters.scores`); DeBERTa-v2's does not.
    """

    layers: str
    num_layers_key: str = "num_hidden_layers"
    width_keys: tuple[str, str, str] = ("hidden_size", "num_attention_heads", "intermediate_size")
    positions: Positions = "table"
    position_key: str = "max_position_embeddings"
    query: str | None = None
    key: str | None = None
    value: str | None = None
    fused_qkv: str | None = None
    causal: bool = False
    token_type_ids: bool = False
    pruning: PruningLayout | None = None
    onnx_optimizer: str | None = None
    attention_interface: bool = True

    @property
    def rotary(self) -> bool:
        """Whether positions are rotated into Q and K inside attention, after the projections.

        Scores rebuilt from captured Q and K (TinyBERT's attention loss) are then not the model's.
        """
        return self.positions == "rotary"


_BERT_PRUNING = PruningLayout(
    projections=(
        PrunedProjection("attention.self.query", ("qk",), "hidden", query=0),
        PrunedProjection("attention.self.key", ("qk",), "hidden"),
        PrunedProjection("attention.self.value", ("vo",), "hidden"),
        PrunedProjection("attention.output.dense", ("hidden",), "vo"),
        PrunedProjection("intermediate.dense", ("ffn",), "hidden"),
        PrunedProjection("output.dense", ("hidden",), "ffn"),
    ),
    attention="attention.self",
    conv1d=False,
    attention_widths=(("attention_head_size", "head_dim"), ("all_head_size", "hidden")),
)
_GPT2_PRUNING = PruningLayout(
    projections=(
        PrunedProjection("attn.c_attn", ("qk", "qk", "vo"), "hidden", query=0),
        PrunedProjection("attn.c_proj", ("hidden",), "vo"),
        PrunedProjection("mlp.c_fc", ("ffn",), "hidden"),
        PrunedProjection("mlp.c_proj", ("hidden",), "ffn"),
    ),
    attention="attn",
    conv1d=True,
    attention_widths=(("head_dim", "head_dim"), ("embed_dim", "hidden"), ("split_size", "hidden")),
)

# Llama-style decoders: grouped-query attention, SwiGLU MLP, RMSNorm. A unit of attention is one KV group
# (its key and value heads, its query heads and their columns of the output projection), so every layer
# keeps the family's query-to-KV ratio and stays a standard checkpoint.
_DECODER_PRUNING = PruningLayout(
    projections=(
        PrunedProjection("self_attn.q_proj", ("kv",), "hidden", span="query_group"),
        PrunedProjection("self_attn.k_proj", ("kv",), "hidden", span="kv_head"),
        PrunedProjection("self_attn.v_proj", ("kv",), "hidden", span="kv_head"),
        PrunedProjection("self_attn.o_proj", ("hidden",), "kv", span="query_group"),
        PrunedProjection("mlp.gate_proj", ("ffn",), "hidden"),
        PrunedProjection("mlp.up_proj", ("ffn",), "hidden"),
        PrunedProjection("mlp.down_proj", ("hidden",), "ffn"),
    ),
    attention="self_attn",
    conv1d=False,
    attention_widths=(),
    scheme="kv_groups",
    head_norms=("self_attn.q_norm", "self_attn.k_norm"),
)
# OLMo-2 normalises the whole query and key projections (all heads at once): those norms lose the
# entries of the heads pruned.
_OLMO2_PRUNING = replace(
    _DECODER_PRUNING,
    projections=(
        *_DECODER_PRUNING.projections,
        PrunedProjection("self_attn.q_norm", ("kv",), None, span="query_group"),
        PrunedProjection("self_attn.k_norm", ("kv",), None, span="kv_head"),
    ),
    head_norms=(),
)

_BERT = Family(
    layers="encoder.layer",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    token_type_ids=True,
    pruning=_BERT_PRUNING,
    onnx_optimizer="bert",
)
_LLAMA = Family(
    layers="layers",
    positions="rotary",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    causal=True,
    pruning=_DECODER_PRUNING,
)

FAMILIES: dict[str, Family] = {
    "bert": _BERT,
    "roberta": replace(_BERT, positions="table_after_padding"),
    "xlm-roberta": replace(_BERT, positions="table_after_padding"),
    # ELECTRA's discriminator is BERT's layout; its pruning (embedding projection) is not mapped yet.
    "electra": replace(_BERT, pruning=None),
    "deberta-v2": Family(
        layers="encoder.layer",
        positions="table_unless_relative",
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        token_type_ids=True,
        attention_interface=False,  # disentangled attention, computed in the module itself
    ),
    "distilbert": Family(
        layers="transformer.layer",
        num_layers_key="n_layers",
        width_keys=("dim", "n_heads", "hidden_dim"),
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
    ),
    "gpt2": Family(
        layers="h",
        num_layers_key="n_layer",
        width_keys=("n_embd", "n_head", "n_inner"),
        position_key="n_positions",
        fused_qkv="attn.c_attn",
        causal=True,
        pruning=_GPT2_PRUNING,
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,  # q/k norms sit after the projections, inside attention: captured Q and K precede them
    "gemma2": _LLAMA,  # extra norms, soft-capping and sliding layers all sit outside the paths above
    "gemma3_text": _LLAMA,  # Gemma 3's text model: Gemma 2's layout plus q/k norms
    # Norms after attention and MLP (none before), q/k norms over the whole projection.
    "olmo2": replace(_LLAMA, pruning=_OLMO2_PRUNING),
    # Phi-3 fuses [Q | K | V] (grouped: K and V are num_key_value_heads wide) and [gate | up]; its
    # pruning (blocks of unequal sizes within one weight) is not mapped yet.
    "phi3": Family(layers="layers", positions="rotary", fused_qkv="self_attn.qkv_proj", causal=True),
}
SUPPORTED: tuple[str, ...] = tuple(FAMILIES)


def family_of(model_or_config: PreTrainedModel | PretrainedConfig) -> Family:
    """Return the family's record, or raise a ``ModelError`` naming the supported families."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", type(config).__name__)
    if model_type not in FAMILIES:
        raise ModelError(
            f"Unsupported architecture {model_type!r}. Supported model types: {', '.join(SUPPORTED)}."
        )
    return FAMILIES[model_type]


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest input a model's position table takes (``None``: rotary or relative positions only).

    A family distil does not know is read as having an absolute table of ``max_position_embeddings``.
    """
    fam = FAMILIES.get(str(getattr(config, "model_type", "")))
    rule, key = (fam.positions, fam.position_key) if fam else ("table", "max_position_embeddings")
    relative_only = rule == "table_unless_relative" and not getattr(config, "position_biased_input", True)
    if rule == "rotary" or relative_only:
        return None
    limit = getattr(config, key, None)
    if limit is None:
        return None
    if rule == "table_after_padding":
        return int(limit) - int(config.pad_token_id) - 1
    return int(limit)


def submodule(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``'encoder.layer'``) below ``root``."""
    return root.get_submodule(path)


def get_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's Transformer blocks, in order."""
    layers = submodule(model.base_model, family_of(model).layers)
    assert isinstance(layers, nn.ModuleList)
    return layers


def num_layers(config: PretrainedConfig) -> int:
    """The depth recorded in a config of a supported family."""
    return int(getattr(config, family_of(config).num_layers_key))


def layer_index(config: PretrainedConfig, layer: int | None, field: str) -> int:
    """0-indexed position of 1-indexed ``layer`` (``None``: the last); a ``ConfigError`` names ``field``."""
    depth = num_layers(config)
    chosen = depth if layer is None else layer
    if not 1 <= chosen <= depth:
        raise ConfigError(f"{field} must be in 1..{depth} for this model, got {chosen}.")
    return chosen - 1


def has_trained_lm_head(model: PreTrainedModel | PretrainedConfig) -> bool:
    """Whether the checkpoint (of this model, or of this config) carried a trained language-model head.

    It did if it was saved as a masked- or causal-LM class, or if it is a decoder whose output layer is
    tied to its (trained) input embeddings. Otherwise loading it with an LM head gives a random one.
    """
    config = getattr(model, "config", model)
    architectures = list(getattr(config, "architectures", None) or [])
    tied = family_of(config).causal and bool(getattr(config, "tie_word_embeddings", False))
    return tied or any(head_of_architectures([a]) in ("lm", "mlm") for a in architectures)
