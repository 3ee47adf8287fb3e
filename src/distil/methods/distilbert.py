"""DistilBERT-style distillation (Sanh, Debut, Chaumond and Wolf, 2019, arXiv:1910.01108).

loss = alpha_ce * T^2 * KL(teacher || student) on the prediction head + alpha_mlm * MLM (next-token loss
for decoders) + alpha_cos * (1 - cos) between the last hidden states, all over real tokens.

On a corpus (``data.task=corpus``) both models carry their language-model head (``model_head`` returns
``mlm``: masked LM for encoders, causal LM for decoders) and encoder inputs are masked by
``prepare_batch`` before both forward passes. On a labelled task the prediction head is the task head:
KL on the class logits, no MLM term, cosine on the last hidden states. The paper's student starts from
every other teacher layer (``models.student.init=layers``, ``layer_map=paper``; `distilbert_layers`).
Settings and choices: ``docs/methods/distilbert.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.adapters.masking import head_rows, mask_batch
from distil.errors import ConfigError
from distil.losses import (
    kd_kl,
    logit_mse,
    masked_cosine_loss,
    next_token_labels,
    task_loss,
    token_cross_entropy,
)
from distil.methods.base import Method, MethodContext
from distil.models.families import family_of, has_trained_lm_head
from distil.models.layer_maps import paper_layer_map
from distil.models.loading import load_tokenizer
from distil.types import Batch, FeatureRequest, Features, LossOutput, RunView

__all__ = ["DistilBERTConfig", "DistilBERTStyle", "distilbert_layers"]

_SMOOTHING_POWER = -0.7  # XLM / DistilBERT: selection weight counts^-0.7 favours rare tokens


def distilbert_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """DistilBERT's choice of teacher layers, 0-indexed: every other layer, keeping the top one.

    It is the M(k) map of `distil.models.students.paper_layer_map` shifted to 0-indexing; 12 -> 6 gives
    ``[0, 2, 4, 7, 9, 11]`` (the layers ``extract_distilbert.py`` copies). In a run use
    ``models.student.init=layers`` with ``models.student.layer_map=paper`` (1-indexed in configs).

    Raises:
        ConfigError: ``teacher_layers != 2 * student_layers``.
    """
    return [layer - 1 for layer in paper_layer_map(teacher_layers, student_layers)]


@dataclass
class DistilBERTConfig:
    """DistilBERT-style settings (defaults: the released model's, transformers#2013).

    Attributes:
        temperature: Softmax temperature T of the soft-target KL, which is scaled by T^2.
        alpha_ce: Weight of the soft-target KL on the prediction head. On a corpus it needs a teacher
            with a trained language-model head; set 0 for a teacher without one.
        alpha_mlm: Weight of the student's MLM loss (next-token loss for decoders); corpus only.
        alpha_cos: Weight of the cosine loss between the last hidden states.
        alpha_task: Weight of the task loss on labelled tasks (not in the paper; 0 keeps it off).
        mlm_probability: Share of real, non-special tokens selected for masking (80/10/10).
        smoothing: Select tokens to mask with weights counts^-0.7 (rare tokens more often). The counts are
            running counts over the training batches seen so far (see the method card).
        restrict_ce_to_mask: Compute the KL only at masked positions (DistilBERT's option, off there too).
    """

    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_task: float = 0.0
    mlm_probability: float = 0.15
    smoothing: bool = False
    restrict_ce_to_mask: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")
        for name in ("alpha_ce", "alpha_mlm", "alpha_cos", "alpha_task"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be >= 0, got {getattr(self, name)}.")
        if not self.alpha_ce + self.alpha_mlm + self.alpha_cos + self.alpha_task > 0:
            raise ConfigError(
                "method.alpha_ce, alpha_mlm, alpha_cos and alpha_task are all 0: nothing to train."
            )
        if not 0 < self.mlm_probability <= 1:
            raise ConfigError(f"method.mlm_probability must be in (0, 1], got {self.mlm_probability}.")

    name: ClassVar[str] = "distilbert"

    @classmethod
    def tiny(cls) -> DistilBERTConfig:
        """Settings for fast generic tests (the defaults; on a labelled task the MLM term is off)."""
        return cls()

    def check_run(self, run: RunView) -> None:
        """A labelled task needs a term other than the MLM; the teacher cache only takes class logits."""
        if run.head in ("seq", "qa") and self.alpha_ce + self.alpha_cos + self.alpha_task == 0:
            raise ConfigError(
                "On a labelled task the MLM term is off: set method.alpha_ce, alpha_cos or alpha_task > 0."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        if self.alpha_cos > 0:
            return "needs the teacher's hidden states (alpha_cos > 0)"
        return "masks the inputs on a corpus" if run.task_kind == "corpus" else None


def _check_lm_head(teacher: PreTrainedModel) -> None:
    if not has_trained_lm_head(teacher):
        architectures = list(getattr(teacher.config, "architectures", None) or [])
        raise ConfigError(
            f"method.alpha_ce > 0 on a corpus needs the teacher's language-model head, but the teacher "
            f"checkpoint {teacher.name_or_path!r} has none (architectures: {architectures}), so it would be "
            "random. Use a teacher saved with its MLM / LM head (e.g. *ForMaskedLM), or set "
            "method.alpha_ce=0 (the student's own MLM and the cosine loss need no teacher head)."
        )


def _tokenizer(ctx: MethodContext) -> PreTrainedTokenizerBase:
    # Without the run's tokenizer in the context, the teacher's checkpoint folder holds it.
    if ctx.tokenizer is not None:
        return ctx.tokenizer
    path = ctx.teacher.name_or_path if ctx.teacher is not None else ""
    if not path:
        raise ConfigError(
            "DistilBERT-style masking needs the run's tokenizer, and the teacher was not loaded from a "
            "checkpoint folder that holds one; load the teacher with from_pretrained."
        )
    return load_tokenizer(str(path))


class DistilBERTStyle(Method):
    """Soft-target KL + MLM (or next-token) + last-hidden-state cosine, weighted 5 / 2 / 1 by default."""

    name: ClassVar[str] = "distilbert"
    Config: ClassVar[type[DistilBERTConfig]] = DistilBERTConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "distilbert"

    def __init__(self, cfg: DistilBERTConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.is_regression = ctx.is_regression
        # The corpus task has no labels; its prediction head is the language-model head.
        self.token_level = ctx.num_labels == 0
        self.causal = family_of(ctx.student).causal
        if self.token_level and cfg.alpha_ce > 0:
            _check_lm_head(ctx.teacher)
        self.masks = self.token_level and not self.causal
        self.tokenizer = _tokenizer(ctx) if self.masks else None
        self.modules = nn.ModuleDict()
        d_s, d_t = int(ctx.student.config.hidden_size), int(ctx.teacher.config.hidden_size)
        if cfg.alpha_cos > 0 and d_s != d_t:
            # Not in the paper (equal widths there): a learned map lets a narrower student match directions.
            self.modules["cos_projection"] = nn.Linear(d_s, d_t)
        # Running token counts of the smoothing option: method state (checkpointed, not trained).
        # float64 keeps large counts exact.
        self.token_counts: Tensor | None = None
        if self.masks and cfg.smoothing:
            embeddings = ctx.student.get_input_embeddings()
            assert isinstance(embeddings, nn.Embedding)
            vocab = embeddings.num_embeddings
            self.token_counts = torch.zeros(vocab, dtype=torch.float64)

    @classmethod
    def model_head(cls, task_head: str) -> str:
        """``mlm`` (the family's language-model head) on a corpus, else the task's own head."""
        return "mlm" if task_head == "base" else task_head

    def student_request(self) -> FeatureRequest:
        """Logits for the KL / MLM / task terms, hidden states for the cosine."""
        c = self.cfg
        logits = c.alpha_ce > 0 or c.alpha_task > 0 or (self.token_level and c.alpha_mlm > 0)
        return FeatureRequest(logits=logits, hidden_states=c.alpha_cos > 0)

    def teacher_request(self) -> FeatureRequest | None:
        """Logits for the KL, hidden states for the cosine."""
        c = self.cfg
        if c.alpha_ce == 0 and c.alpha_cos == 0:
            return None
        return FeatureRequest(logits=c.alpha_ce > 0, hidden_states=c.alpha_cos > 0)

    @property
    def corrupts_inputs(self) -> bool:
        """Encoders on a corpus see masked inputs."""
        return self.masks

    def trainable_modules(self) -> nn.ModuleDict:
        """The cosine projection when widths differ."""
        return self.modules

    def state_dict(self) -> dict[str, Tensor]:
        """The running token counts of ``smoothing``."""
        return {"token_counts": self.token_counts} if self.token_counts is not None else {}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the token counts."""
        if self.token_counts is not None:
            self.token_counts = state["token_counts"].to(torch.float64).clone()
        elif state:
            raise ValueError(f"DistilBERT-style without smoothing keeps no state, got {sorted(state)}.")

    def _token_weights(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        assert self.token_counts is not None
        self.token_counts = self.token_counts.to(input_ids.device)
        seen = input_ids[attention_mask.bool()].reshape(-1)
        batch_counts = torch.bincount(seen, minlength=self.token_counts.numel()).to(self.token_counts)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every process then holds the same counts (over the global batches).
            dist.all_reduce(batch_counts)
        self.token_counts += batch_counts
        return self.token_counts.clamp_min(1.0).pow(_SMOOTHING_POWER).float()

    def prepare_batch(self, batch: Batch) -> Batch:
        """Mask encoder inputs on a corpus (15%, 80/10/10, global RNG); other batches pass unchanged.

        The head scores the masked positions, or every real token when the KL covers them; the teacher
        sees the same masked inputs, as in DistilBERT (`distil.adapters.masking.mask_batch`).
        """
        if not self.masks:
            return batch
        assert self.tokenizer is not None
        weights = self._token_weights(batch.input_ids, batch.attention_mask) if self.cfg.smoothing else None
        kl_everywhere = self.cfg.alpha_ce > 0 and not self.cfg.restrict_ce_to_mask
        return mask_batch(
            batch, self.tokenizer, mlm_probability=self.cfg.mlm_probability, kl_everywhere=kl_everywhere,
            token_weights=weights,
        )  # fmt: skip

    def _lm_terms(self, batch: Batch, student: Features, teacher: Features | None) -> dict[str, Tensor]:
        c, parts = self.cfg, {}
        assert student.logits is not None or (c.alpha_ce == 0 and c.alpha_mlm == 0)
        if self.masks and batch.mlm_labels is None:
            raise ConfigError(
                "DistilBERT-style on a corpus needs masked inputs: call prepare_batch(batch) first."
            )
        if self.causal:
            labels = next_token_labels(batch.input_ids, student.attention_mask)
            where = student.attention_mask.bool()
        else:
            assert batch.mlm_labels is not None
            where = batch.mlm_labels != -100 if c.restrict_ce_to_mask else student.attention_mask.bool()
            labels, where = head_rows(batch, batch.mlm_labels, where)
        if c.alpha_ce > 0:
            assert teacher is not None and teacher.logits is not None and student.logits is not None
            parts["ce"] = kd_kl(student.logits, teacher.logits, c.temperature, mask=where)
        if c.alpha_mlm > 0:
            assert student.logits is not None
            parts["next_token" if self.causal else "mlm"] = token_cross_entropy(student.logits, labels)
        return parts

    def _task_terms(self, batch: Batch, student: Features, teacher: Features | None) -> dict[str, Tensor]:
        c, parts = self.cfg, {}
        if c.alpha_ce > 0:
            assert teacher is not None and teacher.logits is not None and student.logits is not None
            if self.is_regression:  # as in KD: no distribution to soften, match the outputs instead
                parts["ce"] = logit_mse(student.logits, teacher.logits)
            else:
                parts["ce"] = kd_kl(student.logits, teacher.logits, c.temperature)
        if c.alpha_task > 0:
            assert student.logits is not None and batch.labels is not None
            parts["task"] = task_loss(student.logits, batch.labels, self.is_regression)
        return parts

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Weighted sum of the terms with a non-zero weight; each is logged unweighted."""
        c = self.cfg
        terms = self._lm_terms if self.token_level else self._task_terms
        parts = terms(batch, student, teacher)
        if c.alpha_cos > 0:
            assert teacher is not None and student.hidden_states and teacher.hidden_states
            s_last = student.hidden_states[-1]
            if "cos_projection" in self.modules:
                s_last = self.modules["cos_projection"](s_last)
            parts["cos"] = masked_cosine_loss(s_last, teacher.hidden_states[-1], student.attention_mask)
        weight = {
            "ce": c.alpha_ce,
            "mlm": c.alpha_mlm,
            "next_token": c.alpha_mlm,
            "cos": c.alpha_cos,
            "task": c.alpha_task,
        }
        total = sum(weight[name] * value for name, value in parts.items())
        return LossOutput(total=total, parts=parts)  # type: ignore[arg-type]
