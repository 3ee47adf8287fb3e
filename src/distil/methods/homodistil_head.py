"""HomoDistil's head stage: fit a language-model head on the frozen teacher (our addition, not the paper's).

HomoDistil's KL term needs the teacher's MLM head, but some teachers (sentence-embedding checkpoints
like the embedded all-MiniLM-L6-v2) are saved without one. This stage trains only the head that sits
outside the (frozen) base model, with the MLM loss (next-token loss for decoders), on a copy of the
teacher; the ``homodistil`` plan (`distil.plans.homodistil`) then uses the result as the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from distil.adapters.masking import head_rows, mask_batch
from distil.errors import ConfigError
from distil.losses import next_token_labels, token_cross_entropy
from distil.methods.base import Method, MethodContext
from distil.models.families import family_of
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["HomoDistilHead", "HomoDistilHeadConfig"]


@dataclass
class HomoDistilHeadConfig:
    """Head fitting settings.

    Attributes:
        mlm_probability: Share of real, non-special tokens masked (80/10/10) for encoders.
    """

    mlm_probability: float = 0.15

    name: ClassVar[str] = "homodistil_head"

    def __post_init__(self) -> None:
        if not 0 < self.mlm_probability <= 1:
            raise ConfigError(f"method.mlm_probability must be in (0, 1], got {self.mlm_probability}.")

    @classmethod
    def tiny(cls) -> HomoDistilHeadConfig:
        """Settings for fast generic tests."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """A corpus, and a copy of the teacher as the model whose head is fitted."""
        if run.task_kind != "corpus":
            raise ConfigError(
                f"Method 'homodistil_head' fits an MLM head on a corpus (data.task=corpus), not on "
                f"data.task={run.task}."
            )
        if run.student_init != "copy":
            raise ConfigError(
                "Method 'homodistil_head' fits the teacher's own head: set models.student.init=copy."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "uses no teacher outputs"


class HomoDistilHead(Method):
    """The MLM (or next-token) loss on a copy of the teacher whose body is frozen."""

    name: ClassVar[str] = "homodistil_head"
    Config: ClassVar[type[HomoDistilHeadConfig]] = HomoDistilHeadConfig
    uses_teacher: ClassVar[bool] = True  # the teacher checkpoint is copied into the student; never run
    card: ClassVar[str] = "homodistil"

    def __init__(self, cfg: HomoDistilHeadConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.causal = family_of(ctx.student).causal
        self.tokenizer = None if self.causal else ctx.tokenizer
        if not self.causal and ctx.tokenizer is None:
            raise ConfigError("HomoDistil's MLM masking needs the run's tokenizer in the method context.")
        body = {id(p) for p in ctx.student.base_model.parameters()}
        for p in ctx.student.parameters():
            p.requires_grad_(id(p) not in body)
        if not any(p.requires_grad for p in ctx.student.parameters()):
            raise ConfigError("This model's LM head is tied to its embeddings: there is no head to fit.")

    @classmethod
    def model_head(cls, task_head: str) -> str:
        """The family's language-model head."""
        return "mlm"

    @property
    def corrupts_inputs(self) -> bool:
        """Encoders see masked inputs."""
        return self.tokenizer is not None

    def student_request(self) -> FeatureRequest:
        """The head's logits."""
        return FeatureRequest(logits=True)

    def teacher_request(self) -> FeatureRequest | None:
        """No teacher pass."""
        return None

    def trainable_modules(self) -> nn.ModuleDict:
        """Nothing beside the (head of the) student."""
        return nn.ModuleDict()

    def prepare_batch(self, batch: Batch) -> Batch:
        """Mask encoder inputs (80/10/10, global RNG); the head scores the masked positions only."""
        if self.tokenizer is None:
            return batch
        return mask_batch(
            batch, self.tokenizer, mlm_probability=self.cfg.mlm_probability, kl_everywhere=False
        )

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """The MLM loss at the masked positions (next-token loss for decoders)."""
        assert student.logits is not None
        if self.causal:
            lm = token_cross_entropy(
                student.logits, next_token_labels(batch.input_ids, student.attention_mask)
            )
            return LossOutput(total=lm, parts={"next_token": lm})
        if batch.mlm_labels is None:
            raise ConfigError("HomoDistil's head stage needs masked inputs: call prepare_batch first.")
        labels, _ = head_rows(batch, batch.mlm_labels, batch.mlm_labels != -100)
        lm = token_cross_entropy(student.logits, labels)
        return LossOutput(total=lm, parts={"mlm": lm})
