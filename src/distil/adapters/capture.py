"""Feature capture: one forward pass of one model turned into a typed ``Features`` record.

Hidden states and attention probabilities come from the model's own outputs. The Q/K/V projection
outputs, which ``transformers`` does not return, come from forward hooks that live only inside
``capture_qkv``; pre-softmax attention scores from the attention computation itself
(`distil.adapters.scores`). Module paths come from ``distil.models.families``, never from strings in configs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from distil.adapters.scores import capture_scores
from distil.errors import ModelError
from distil.models.families import Family, family_of, get_layers
from distil.types import QKV, Batch, FeatureRequest, Features

__all__ = ["capture_qkv", "forward_features", "model_inputs"]

_ROLES = ("query", "key", "value")
_Hook = Callable[[nn.Module, tuple[object, ...], torch.Tensor], None]


def _normalise_layers(layers: Sequence[int], depth: int, model_type: str) -> list[int]:
    """Map possibly negative indices to ``0..depth-1``, dropping duplicates, keeping first-seen order."""
    valid = f"valid indices are 0..{depth - 1}, or -{depth}..-1 counting from the last layer"
    out: list[int] = []
    for raw in layers:
        try:
            index = operator.index(raw)
        except TypeError:
            raise ModelError(f"Layer index {raw!r} is not an integer; {valid}.") from None
        if not -depth <= index < depth:
            raise ModelError(
                f"Layer index {index} is out of range for a {depth}-layer {model_type!r} model; {valid}."
            )
        if index % depth not in out:
            out.append(index % depth)
    return out


def _resolve(block: nn.Module, path: str, index: int, model_type: str) -> nn.Module:
    try:
        return block.get_submodule(path)
    except AttributeError:
        # Only happens if a transformers release renames modules; say which entry of the table is stale.
        raise ModelError(
            f"Layer {index} of this {model_type!r} model has no module {path!r}; "
            "the path table in distil.models.families does not match this transformers version."
        ) from None


def _make_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, num_kv_heads: int) -> QKV:
    head_dim, rest = divmod(q.shape[-1], num_heads)
    kv_width = num_kv_heads * head_dim
    if rest or k.shape[-1] != kv_width or v.shape[-1] != kv_width:
        raise ModelError(
            f"Q/K/V widths {q.shape[-1]}/{k.shape[-1]}/{v.shape[-1]} do not fit {num_heads} query heads "
            f"and {num_kv_heads} key/value heads from the model config."
        )
    return QKV(q, k, v, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim)


class _LayerRecorder:
    """Collects one layer's Q, K and V from its projection hooks and publishes them as one ``QKV``.

    Only the first call of each projection after the block starts counts: DeBERTa-v2 with
    ``share_att_key`` calls ``query_proj``/``key_proj`` a second time on the relative-position
    embeddings, which must not overwrite the token projections.
    """

    def __init__(self, index: int, heads: tuple[int, int], out: dict[int, QKV]) -> None:
        self.index, self.heads, self.out = index, heads, out
        self.seen: dict[str, torch.Tensor] = {}

    def reset(self, _module: nn.Module, _args: tuple[object, ...]) -> None:
        self.seen = {}

    def fused(self, _module: nn.Module, _args: tuple[object, ...], output: torch.Tensor) -> None:
        # [Q | K | V] with Q num_heads and K, V num_kv_heads heads of one width (equal thirds without GQA).
        num_heads, num_kv_heads = self.heads
        head_dim = output.shape[-1] // (num_heads + 2 * num_kv_heads)
        sizes = [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
        q, k, v = output.split(sizes, dim=-1)
        self.out[self.index] = _make_qkv(q, k, v, num_heads, num_kv_heads)

    def role(self, name: str) -> _Hook:
        def hook(_module: nn.Module, _args: tuple[object, ...], output: torch.Tensor) -> None:
            if name in self.seen:
                return
            self.seen[name] = output
            if len(self.seen) == len(_ROLES):
                q, k, v = (self.seen[r] for r in _ROLES)
                self.out[self.index] = _make_qkv(q, k, v, *self.heads)

        return hook


def _projection_hooks(spec: Family, recorder: _LayerRecorder) -> dict[str, _Hook]:
    """Forward hooks keyed by module path inside one block."""
    if spec.fused_qkv is not None:
        return {spec.fused_qkv: recorder.fused}
    paths = {role: getattr(spec, role) for role in _ROLES}
    if None in paths.values():
        raise ModelError(f"The architecture table lists no Q/K/V projections: {paths}.")
    return {path: recorder.role(role) for role, path in paths.items()}


@contextmanager
def capture_qkv(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[dict[int, QKV]]:
    """Capture the Q, K and V projection outputs of some layers during forward passes.

    The dict is filled by every forward pass run inside the block (the latest pass wins) and keeps its
    contents after the block exits. Tensors are not detached, so losses on them train the projections.
    Captured values precede any rotary embedding (Llama family).

    Args:
        model: A model of a supported family, any head class.
        layers: 0-indexed layers; negative indices count from the last layer. Keys of the yielded dict
            are the non-negative indices.

    Yields:
        ``{layer: QKV}`` with tensors ``[batch, seq, heads * head_dim]``.

    Raises:
        ModelError: The architecture is unsupported or a layer index is out of range.
    """
    spec = family_of(model)
    model_type = str(model.config.model_type)
    blocks = get_layers(model)
    indices = _normalise_layers(layers, len(blocks), model_type)
    num_heads = int(model.config.num_attention_heads)
    heads = (num_heads, int(getattr(model.config, "num_key_value_heads", None) or num_heads))
    captured: dict[int, QKV] = {}
    # Resolve every module before registering anything, so a bad path leaves no hook behind.
    pre_hooks: list[tuple[nn.Module, Callable[[nn.Module, tuple[object, ...]], None]]] = []
    hooks: list[tuple[nn.Module, _Hook]] = []
    for i in indices:
        recorder = _LayerRecorder(i, heads, captured)
        pre_hooks.append((blocks[i], recorder.reset))
        for path, hook in _projection_hooks(spec, recorder).items():
            hooks.append((_resolve(blocks[i], path, i, model_type), hook))
    handles: list[RemovableHandle] = []
    try:
        for block, pre_hook in pre_hooks:
            handles.append(block.register_forward_pre_hook(pre_hook))
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def model_inputs(
    model: PreTrainedModel, batch: Batch | Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Select the batch entries the model's forward should receive.

    Batches carry extra keys (``labels``, ``idx``) that must not reach the model, and a tokenizer may
    emit ``token_type_ids`` that a family ignores or, with ``type_vocab_size == 0`` (DeBERTa-v3),
    cannot embed.

    Args:
        model: A model of a supported family.
        batch: Collated tensors, at least ``input_ids``.

    Returns:
        ``input_ids``, ``attention_mask`` and, where the family uses them, ``token_type_ids``; only keys
        present in ``batch``.
    """
    keys = ["input_ids", "attention_mask"]
    if family_of(model).token_type_ids and getattr(model.config, "type_vocab_size", 1) > 0:
        keys.append("token_type_ids")
    entries = batch.tensors() if isinstance(batch, Batch) else batch
    return {key: entries[key] for key in keys if key in entries}


def _ensure_eager(model: PreTrainedModel) -> None:
    # sdpa and flex attention return an empty tuple for output_attentions in transformers 5.
    if model.config._attn_implementation != "eager":
        model.set_attn_implementation("eager")


def _head_logits(outputs: object) -> torch.Tensor | None:
    """The head's scores: ``logits``, or a QA head's start and end scores stacked as ``[B, 2, S]``."""
    logits = getattr(outputs, "logits", None)
    start, end = getattr(outputs, "start_logits", None), getattr(outputs, "end_logits", None)
    if logits is None and start is not None and end is not None:
        # Positions on the last axis: the shared losses then treat start and end as two examples whose
        # classes are the positions, so task_loss is (CE_start + CE_end) / 2 and kd_kl (KL_s + KL_e) / 2.
        return torch.stack((start, end), dim=1)
    return logits


@contextmanager
def _head_at(model: PreTrainedModel, positions: torch.Tensor | None) -> Iterator[None]:
    """Feed the output-embedding layer only the hidden states at ``positions`` (all when ``None``)."""
    if positions is None:
        yield
        return
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Module):
        raise ModelError(
            "The batch asks for language-model scores at selected positions (head_positions), but "
            f"{type(model).__name__} has no output-embedding layer; load it with its MLM / LM head."
        )

    def gather(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0][positions], *args[1:])

    # The whole prediction head when it is one child module (BERT's ``cls``: dense, activation and
    # LayerNorm before the vocabulary projection; RoBERTa's ``lm_head``): every op of it works token by
    # token, so gathering before it gives the same scores and skips the transform of unscored tokens.
    root = next(
        (
            child
            for child in model.children()
            if child is not model.base_model and any(m is head for m in child.modules())
        ),
        head,
    )
    handle = root.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def forward_features(model: PreTrainedModel, batch: Batch, request: FeatureRequest) -> Features:
    """Run one forward pass and collect what ``request`` asks for.

    Asking for attentions switches the model to eager attention for good (the only implementation that
    returns them); the switch does not change its outputs beyond float rounding.

    Args:
        model: A model of a supported family, any head class.
        batch: The batch; fields the model does not take are ignored.
        request: Which features to return.

    Returns:
        The features; fields not requested are ``None`` (``qkv`` empty). ``logits`` is also ``None`` for
        a model without a head; for a question-answering head it is ``[batch, 2, seq]`` (start, end);
        ``[N, vocab]`` when ``batch.head_positions`` is set (the N selected positions, row-major).

    Raises:
        ModelError: The architecture is unsupported, a layer index is out of range, the model did not
            return the requested hidden states or attentions, or ``HEAD_POSITIONS`` is given for a model
            without an output-embedding layer.
    """
    spec = family_of(model)
    inputs = model_inputs(model, batch)
    if request.attentions:
        _ensure_eager(model)
    # Decoders would otherwise build a KV cache that distillation never reads.
    extra = {"use_cache": False} if spec.causal else {}
    positions = batch.head_positions if request.logits else None
    scoring: AbstractContextManager[dict[int, torch.Tensor]] = (
        capture_scores(model, request.score_layers) if request.score_layers else nullcontext({})
    )
    with capture_qkv(model, request.qkv_layers) as qkv, scoring as scores, _head_at(model, positions):
        outputs = model(
            **inputs,
            output_hidden_states=request.hidden_states,
            output_attentions=request.attentions,
            return_dict=True,
            **extra,
        )
    hidden = outputs.hidden_states if request.hidden_states else None
    attentions = outputs.attentions if request.attentions else None
    if request.hidden_states and not hidden:
        raise ModelError(f"{type(model).__name__} returned no hidden states.")
    if request.attentions and (not attentions or any(a is None for a in attentions)):
        raise ModelError(
            f"{type(model).__name__} returned no attention probabilities under attn_implementation="
            f"{model.config._attn_implementation!r}; load it with attn_implementation='eager'."
        )
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(inputs["input_ids"])
    return Features(
        attention_mask=mask,
        logits=_head_logits(outputs) if request.logits else None,
        hidden_states=tuple(hidden) if hidden is not None else None,
        attentions=tuple(attentions) if attentions is not None else None,
        qkv=qkv,
        scores=dict(scores),
        causal=spec.causal,
    )
