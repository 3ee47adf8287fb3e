"""Typed records passed between layers: what to capture, what was captured, what a loss returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "QKV",
    "Batch",
    "EngineTraits",
    "FeatureRequest",
    "Features",
    "LossOutput",
    "Resize",
    "RunView",
    "Runtime",
    "TopK",
]


@dataclass
class Batch:
    """One collated batch, as it travels from the task through ``prepare_batch`` to both models and the loss.

    Attributes:
        input_ids: ``[batch, seq]`` token ids (after ``prepare_batch``: possibly masked).
        attention_mask: ``[batch, seq]``, 1 on real tokens, 0 on padding.
        token_type_ids: ``[batch, seq]`` segment ids, for families that use them.
        labels: The task's labels: ``[batch]`` class ids or floats, ``[batch, 2]`` answer start/end for
            extractive QA, or ``[batch, seq]`` already shifted next-token ids (-100: not scored) for
            causal LM.
        idx: ``[batch]`` row index in the training set (keys the teacher cache).
        mlm_labels: Set by masking methods: original ids at masked positions, -100 elsewhere.
        head_positions: Set by masking methods (bool ``[batch, seq]``): run the language-model head only at
            these positions, so token logits come back as ``[N, vocab]``. MLM needs scores at ~15 % of
            the tokens, and the vocabulary projection over every token dominates a small model's step.
        prompt_lengths: ``[batch]`` tokens before each row's last assistant turn (chat data): the prompt
            that on-policy distillation completes.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    idx: torch.Tensor | None = None
    mlm_labels: torch.Tensor | None = None
    head_positions: torch.Tensor | None = None
    prompt_lengths: torch.Tensor | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, torch.Tensor]) -> Batch:
        """A batch from collated tensors keyed by field name; keys that are not fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "attention_mask" not in data:
            data = {**data, "attention_mask": torch.ones_like(data["input_ids"])}
        return cls(**{k: v for k, v in data.items() if k in names})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields that are set, by name."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    def replace(self, **changes: Any) -> Batch:
        """A copy with some fields replaced (``prepare_batch`` never edits its input in place)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The batch on ``device``."""
        return Batch(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors().items()})

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (``DataLoader(pin_memory=True)`` calls this)."""
        return Batch(**{k: v.pin_memory() for k, v in self.tensors().items()})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class EngineTraits:
    """What a parallel engine can do: checks and methods ask these, never the engine's name.

    Attributes:
        sharded: Parameters, gradients and optimizer state are held as shards (DTensors) across processes.
        owns_precision: The engine casts to the compute dtype itself, so no autocast runs around it.
        offloads: Parameters can wait on the CPU between uses (``engine.cpu_offload``).
        scales_fp16: float16 loss scaling works on its gradients (a ``GradScaler`` over whole gradients).
        multi_process: It trains across several processes.
    """

    sharded: bool = False
    owns_precision: bool = False
    offloads: bool = False
    scales_fp16: bool = True
    multi_process: bool = False


@dataclass(frozen=True)
class RunView:
    """What a method's config may know about the rest of a run when it checks that it fits (``check_run``).

    Methods never import the run config; the config builds this view for them.

    Attributes:
        task: ``data.task`` (``sst2``, ``custom``, ``squad``, ``corpus``, ``lm``, ...).
        task_kind: The task's registry kind: ``glue``, ``custom``, ``squad``, ``corpus`` or ``lm``.
        head: The head the task's models carry: ``seq``, ``qa``, ``lm`` or ``base`` (none: a corpus).
        labelled: The training data has labels (every task but a corpus).
        regression: The task predicts one real number per example.
        max_steps: ``train.max_steps``.
        eval_select: ``eval.select``: which student is exported (``best`` or ``last``).
        cache_teacher: ``train.cache_teacher``.
        student_init: ``models.student.init``.
        plan: The plan the run belongs to (``single`` for a run of its own).
        engine: What the engine ``engine.name`` asks for can do (``auto``: DDP's, or one process's,
            which agree on everything a check asks).
    """

    task: str
    task_kind: str
    head: str
    labelled: bool
    regression: bool
    max_steps: int | None
    eval_select: str
    cache_teacher: bool
    student_init: str
    plan: str = "single"
    engine: EngineTraits = field(default_factory=EngineTraits)


@dataclass(frozen=True)
class Runtime:
    """What the loop hands a method once the models are wrapped (`Method.attach`).

    Attributes:
        seed: ``train.seed``: the same on every process (a method's own random streams derive from it).
        call_student: Runs a function that calls the student's (``MethodContext.student``) own forward
            outside the loss (e.g. to generate), without gradients, where the engine lets it: under FSDP
            inside the root's forward (its parameters gathered). Every process must call it alike.
        synced: Processes hold shards of the models, so each forward pass is collective: a process that
            has finished generating keeps running forward passes until every process has.
        cut_parameter: Keeps the entries ``index`` of a trainable parameter along ``axis``, the parameter
            object staying the same (optimizer state and references follow it); under FSDP the whole
            tensor is gathered, cut and sharded again. Every process must call it alike.
    """

    seed: int
    call_student: Callable[[Callable[[], Any]], Any]
    synced: bool = False
    cut_parameter: Callable[[nn.Parameter, int, Tensor], None] | None = None


@dataclass(frozen=True)
class FeatureRequest:
    """Which features a method needs from one model's forward pass.

    Attributes:
        logits: Return the prediction head's output.
        hidden_states: Return the embedding output and every layer's output.
        attentions: Return post-softmax attention probabilities (forces eager attention).
        qkv_layers: 0-indexed layers whose Q, K and V projection outputs are captured by hooks;
            negative indices count from the last layer.
        score_layers: 0-indexed layers whose pre-softmax attention scores the attention computation
            hands over as it computes them (`distil.adapters.scores`; families whose attention calls
            transformers' attention interface).
    """

    logits: bool = True
    hidden_states: bool = False
    attentions: bool = False
    qkv_layers: tuple[int, ...] = ()
    score_layers: tuple[int, ...] = ()

    @property
    def inner_layers(self) -> tuple[int, ...]:
        """Layers whose inner tensors (not only their outputs) feed a loss: Q/K/V or scores."""
        return tuple(sorted(set(self.qkv_layers) | set(self.score_layers)))

    def merge(self, other: FeatureRequest) -> FeatureRequest:
        """Return a request that asks for everything either request asks for."""
        return FeatureRequest(
            logits=self.logits or other.logits,
            hidden_states=self.hidden_states or other.hidden_states,
            attentions=self.attentions or other.attentions,
            qkv_layers=tuple(sorted(set(self.qkv_layers) | set(other.qkv_layers))),
            score_layers=tuple(sorted(set(self.score_layers) | set(other.score_layers))),
        )


@dataclass
class QKV:
    """One layer's query, key and value projection outputs, before any rotary embedding.

    Attributes:
        query: ``[batch, seq, num_heads * head_dim]``, heads contiguous along the last axis.
        key: ``[batch, seq, num_kv_heads * head_dim]``.
        value: ``[batch, seq, num_kv_heads * head_dim]``.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (smaller than ``num_heads`` under grouped-query attention).
        head_dim: Size of one attention head.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass
class TopK:
    """A cached teacher's token distribution: its top-k logits and the log-mass of the other tokens.

    Attributes:
        index: ``[batch, seq, k]`` token ids (int64).
        values: ``[batch, seq, k]`` their logits.
        rest: ``[batch, seq]`` ``logsumexp`` of the other logits (``-inf`` when k is the vocabulary).
    """

    index: torch.Tensor
    values: torch.Tensor
    rest: torch.Tensor


@dataclass
class Features:
    """Everything a loss may look at from one forward pass of one model.

    Attributes:
        attention_mask: ``[batch, seq]``, 1 for real tokens.
        logits: ``[batch, num_labels]`` for classification, ``[batch, seq, vocab]`` for LM heads, and
            ``[batch, 2, seq]`` for extractive QA heads: the start scores and the end scores over the
            positions (HF's ``start_logits``/``end_logits`` stacked on axis 1), so that the class axis is
            last and the logit losses apply unchanged (``task_loss`` with ``[batch, 2]`` start/end labels
            is ``(CE_start + CE_end) / 2``; ``kd_kl`` is ``(KL_start + KL_end) / 2``).
        hidden_states: ``num_layers + 1`` tensors ``[batch, seq, hidden]``; index 0 is the embedding output.
        attentions: ``num_layers`` tensors ``[batch, heads, seq, seq]`` of attention probabilities.
        qkv: Captured projections keyed by 0-indexed layer.
        scores: Pre-softmax attention scores ``[batch, heads, seq, seq]`` keyed by 0-indexed layer.
        causal: Whether the model attends only to earlier positions (decoders).
        topk: A teacher read from a top-k cache (`distil.training.topk_cache`) in place of ``logits``.
    """

    attention_mask: torch.Tensor
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    qkv: dict[int, QKV] = field(default_factory=dict)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    causal: bool = False
    topk: TopK | None = None

    def to_dtype(self, dtype: torch.dtype) -> Features:
        """The same features with every floating tensor in ``dtype`` (a teacher kept in another precision)."""

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if t.is_floating_point() else t

        return Features(
            attention_mask=self.attention_mask,
            logits=cast(self.logits) if self.logits is not None else None,
            hidden_states=tuple(cast(h) for h in self.hidden_states)
            if self.hidden_states is not None
            else None,
            attentions=tuple(cast(a) for a in self.attentions) if self.attentions is not None else None,
            qkv={
                k: QKV(cast(v.query), cast(v.key), cast(v.value), v.num_heads, v.num_kv_heads, v.head_dim)
                for k, v in self.qkv.items()
            },
            scores={k: cast(v) for k, v in self.scores.items()},
            causal=self.causal,
            topk=self.topk,
        )


@dataclass
class LossOutput:
    """A method's loss: the weighted total that is back-propagated and its named, unweighted parts."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Resize:
    """Parameters a method narrowed in place (HomoDistil at a prune event), and which entries each kept.

    The parameters stay the same objects, so the optimizer, hooks and tied weights keep them; what the loop
    must still do is cut the optimizer's per-entry state (AdamW's moments) the same way, and wrap the
    student again where a wrapper sized buffers to the old shapes (DDP's gradient buckets). No autograd
    graph built before the cut may still be alive: its gradient accumulators expect the old shapes.

    Attributes:
        kept: ``(parameter, axis, kept indices)``, in the order they were applied to the parameter.
    """

    kept: tuple[tuple[torch.nn.Parameter, int, torch.Tensor], ...]
