"""MiniLM v1: deep self-attention distillation (Wang et al., NeurIPS 2020, https://arxiv.org/abs/2002.10957).

The student's last layer learns the teacher's last-layer attention distributions (softmax(QK^T/sqrt(d_k)))
and value relations (softmax(VV^T/sqrt(d_k))), head by head: teacher and student need the same number of
attention heads (MiniLMv2's relation heads lift that restriction). Task-agnostic, like MiniLMv2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from distil.errors import ConfigError
from distil.losses import attention_kl, value_relation_kl
from distil.methods.base import Method, MethodContext
from distil.models.families import layer_index
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["MiniLM", "MiniLMConfig"]


@dataclass
class MiniLMConfig:
    """MiniLM v1 settings.

    Attributes:
        teacher_layer: 1-indexed teacher layer (``None``: the last, as in the paper).
        attention_weight: Weight of the attention-transfer term.
        value_weight: Weight of the value-relation term.
    """

    teacher_layer: int | None = None
    attention_weight: float = 1.0
    value_weight: float = 1.0

    name: ClassVar[str] = "minilm"

    @classmethod
    def tiny(cls) -> MiniLMConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """Any task; the teacher's Q/K/V are needed every step."""

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's queries, keys and values"


class MiniLM(Method):
    """Attention-distribution KL plus value-relation KL on the last layers."""

    name: ClassVar[str] = "minilm"
    Config: ClassVar[type[MiniLMConfig]] = MiniLMConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "minilm"

    def __init__(self, cfg: MiniLMConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.teacher_layer = layer_index(ctx.teacher.config, cfg.teacher_layer, "method.teacher_layer")
        heads_s = int(ctx.student.config.num_attention_heads)
        heads_t = int(ctx.teacher.config.num_attention_heads)
        if heads_s != heads_t:
            raise ConfigError(
                f"MiniLM needs the same number of attention heads in teacher ({heads_t}) and student "
                f"({heads_s}). Use method minilmv2, whose relation heads are independent of attention heads."
            )

    def student_request(self) -> FeatureRequest:
        """Q/K/V of the student's last layer."""
        return FeatureRequest(logits=False, qkv_layers=(-1,))

    def teacher_request(self) -> FeatureRequest | None:
        """Q/K/V of the chosen teacher layer."""
        return FeatureRequest(logits=False, qkv_layers=(self.teacher_layer,))

    def trainable_modules(self) -> nn.ModuleDict:
        """Nothing beside the student."""
        return nn.ModuleDict()

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """``attention_weight * L_AT + value_weight * L_VR``."""
        assert teacher is not None
        s = next(iter(student.qkv.values()))
        t = teacher.qkv[self.teacher_layer]
        mask, causal = student.attention_mask, student.causal
        at = attention_kl(s.query, s.key, t.query, t.key, mask, s.num_heads, t.num_heads, causal=causal)
        vr = value_relation_kl(s.value, t.value, mask, s.num_kv_heads, t.num_kv_heads, causal=causal)
        total = self.cfg.attention_weight * at + self.cfg.value_weight * vr
        return LossOutput(total=total, parts={"attention": at, "value_relation": vr})
