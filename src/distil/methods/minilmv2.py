"""MiniLMv2: multi-head self-attention relation distillation (Wang et al., Findings of ACL 2021).

Paper: https://arxiv.org/abs/2012.15828. The student's last layer learns the teacher's Q-Q, K-K and V-V
relations (by default) at one teacher layer, with relation heads independent of the attention heads of
either model. Task-agnostic: run it on a corpus (``data.task=corpus``), then ``distil finetune`` the
student on the downstream task. Settings and choices: ``docs/methods/minilmv2.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from distil.errors import ConfigError
from distil.losses import relation_kl
from distil.losses.relations import CHUNK_BYTES, relation_chunks
from distil.methods.base import Method, MethodContext
from distil.models.families import layer_index
from distil.types import QKV, Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["RELATIONS", "MiniLMv2", "MiniLMv2Config"]

RELATIONS = ("QQ", "KK", "VV", "QK", "KQ", "QV", "VQ", "KV", "VK")
_PART = {"Q": "query", "K": "key", "V": "value"}


@dataclass
class MiniLMv2Config:
    """MiniLMv2 settings.

    Attributes:
        relation_heads: A_r, the number of relation heads; must divide both models' Q/K/V widths.
            The paper uses 48 for base-size and 64 for large teachers.
        teacher_layer: 1-indexed teacher layer whose relations are distilled (``None``: the last layer;
            the paper uses 21 of 24 for BERT-large and 19 of 24 for RoBERTa-large), or ``auto``: the
            teacher-layer probe plan (``plan.name=layer_probe``, `distil.plans.layer_probe`; our
            heuristic, not the paper's) chooses it with short runs before training.
        relations: Relation pairs, any of QQ KK VV QK KQ QV VQ KV VK (the paper's default is QQ, KK, VV).
        weights: One weight per relation (default 1 each; the losses are summed, as in the paper).
        head_chunk: Relation heads per chunk of the loss computation (``None``: automatic, bounded memory).
        row_chunk: Query rows per chunk (``None``: automatic).
        chunk_mib: The automatic chunks' budget: one float32 ``[batch, heads, rows, seq]`` tensor of a
            chunk stays under it (three are alive at once). The whole relation is one chunk when it fits;
            otherwise there are as few chunks as the budget allows. The choice is logged
            (``relation_chunks``).
    """

    relation_heads: int = 48
    teacher_layer: int | str | None = None
    relations: list[str] = field(default_factory=lambda: ["QQ", "KK", "VV"])
    weights: list[float] | None = None
    head_chunk: int | None = None
    row_chunk: int | None = None
    chunk_mib: int = CHUNK_BYTES // 2**20

    def __post_init__(self) -> None:
        if self.chunk_mib < 1:
            raise ConfigError(f"method.chunk_mib must be >= 1, got {self.chunk_mib}.")
        if isinstance(self.teacher_layer, str) and self.teacher_layer != "auto":
            raise ConfigError(
                f"method.teacher_layer must be a layer number, null or 'auto', got {self.teacher_layer!r}."
            )
        if self.relation_heads < 1:
            raise ConfigError(f"method.relation_heads must be >= 1, got {self.relation_heads}.")
        bad = [r for r in self.relations if r not in RELATIONS]
        if bad or not self.relations:
            raise ConfigError(f"method.relations must be a non-empty subset of {list(RELATIONS)}, got {bad}.")
        if self.weights is not None and len(self.weights) != len(self.relations):
            raise ConfigError("method.weights needs one weight per entry of method.relations.")

    name: ClassVar[str] = "minilmv2"

    @classmethod
    def tiny(cls) -> MiniLMv2Config:
        """Settings for fast generic tests (tiny models are 32 wide)."""
        return cls(relation_heads=8)

    def check_run(self, run: RunView) -> None:
        """``auto`` needs the probe plan; the teacher's Q/K/V are needed every step."""
        if self.teacher_layer == "auto" and run.plan != "layer_probe":
            raise ConfigError(
                f"method.teacher_layer=auto is chosen by the teacher-layer probe, but plan.name={run.plan}; "
                "set plan.name=layer_probe (or leave the plan out), or give the layer as a number."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's queries, keys and values"


def _width(qkv_part: str, config: Any) -> int:
    hidden = int(config.hidden_size)
    if qkv_part == "query":
        return hidden
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return hidden // heads * kv_heads


class MiniLMv2(Method):
    """Relation KL between the teacher's chosen layer and the student's last layer."""

    name: ClassVar[str] = "minilmv2"
    Config: ClassVar[type[MiniLMv2Config]] = MiniLMv2Config
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "minilmv2"

    def __init__(self, cfg: MiniLMv2Config, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.chunk_bytes = cfg.chunk_mib * 2**20
        if cfg.teacher_layer == "auto":
            raise ConfigError(
                "method.teacher_layer=auto is resolved by the teacher-layer probe plan, before the method "
                "is built."
            )
        layer = int(cfg.teacher_layer) if cfg.teacher_layer is not None else None
        self.teacher_layer = layer_index(ctx.teacher.config, layer, "method.teacher_layer")
        self.weights = cfg.weights or [1.0] * len(cfg.relations)
        self._check_widths(ctx)

    def _check_widths(self, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        a_r = self.cfg.relation_heads
        for side, model in (("student", ctx.student), ("teacher", ctx.teacher)):
            for relation in self.cfg.relations:
                left, right = (_width(_PART[c], model.config) for c in relation)
                if left != right:
                    raise ConfigError(
                        f"Relation {relation}: the {side}'s {relation[0]} and {relation[1]} widths differ "
                        f"({left} vs {right}, grouped-query attention); use same-kind relations (QQ, KK, VV)."
                    )
                if left % a_r:
                    raise ConfigError(
                        f"method.relation_heads={a_r} must divide the {side}'s {relation[0]} width {left}; "
                        "choose a common divisor of both models' widths (e.g. 48 or 64 for 384/768/1024)."
                    )

    def student_request(self) -> FeatureRequest:
        """Q/K/V of the student's last layer."""
        return FeatureRequest(logits=False, qkv_layers=(-1,))

    def teacher_request(self) -> FeatureRequest | None:
        """Q/K/V of the chosen teacher layer."""
        return FeatureRequest(logits=False, qkv_layers=(self.teacher_layer,))

    def trainable_modules(self) -> nn.ModuleDict:
        """Nothing beside the student: relation heads are a view of Q/K/V, not parameters."""
        return nn.ModuleDict()

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Weighted sum of the relation KLs; each is logged as ``rel_<pair>``, the chunk count beside."""
        assert teacher is not None
        s: QKV = next(iter(student.qkv.values()))
        t: QKV = teacher.qkv[self.teacher_layer]
        parts = {}
        batch_size, seq = student.attention_mask.shape
        chunks = relation_chunks(
            batch_size,
            seq,
            self.cfg.relation_heads,
            self.cfg.head_chunk,
            self.cfg.row_chunk,
            self.chunk_bytes,
        )
        for relation in self.cfg.relations:
            left, right = (_PART[c] for c in relation)
            parts[f"rel_{relation}"] = relation_kl(
                getattr(s, left), getattr(s, right), getattr(t, left), getattr(t, right),
                student.attention_mask, self.cfg.relation_heads, causal=student.causal,
                head_chunk=chunks[0], row_chunk=chunks[1],
            )  # fmt: skip
        total = sum(w * parts[f"rel_{r}"] for w, r in zip(self.weights, self.cfg.relations, strict=True))
        # The automatic choice, logged: chunks per relation (1: the whole relation at once).
        count = -(-self.cfg.relation_heads // chunks[0]) * -(-seq // chunks[1])
        parts["relation_chunks"] = torch.tensor(float(count), device=student.attention_mask.device)
        return LossOutput(total=total, parts=parts)  # type: ignore[arg-type]
