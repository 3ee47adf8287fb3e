"""On-policy and sequence-level distillation of a causal LM on chat data.

After Agarwal et al., 2024 (GKD, arXiv:2306.13649) and Kim and Rush, 2016 (sequence-level KD).

Each optimiser step, with probability ``lmbda``, the student completes the last assistant turn of every
conversation in the batch (sampled at ``sample_temperature`` / ``top_p``, at most ``max_new_tokens``),
and the divergence between teacher and student next-token distributions is taken on those tokens: the
student learns on the sequences it produces itself, where its mistakes lead it. Otherwise the batch keeps
the dataset's completions, or, with ``seq_kd``, the teacher completes the prompts (sequence-level KD).
The divergence is any of `distil.losses.divergences` (GKD's generalized JSD with ``beta`` by default),
over the completion tokens only; there is no task term (the student's own samples have no reference).

The coin of a step is a function of ``train.seed`` and the step; each completion is sampled from a
generator seeded by ``train.seed``, the step and the conversation's index (`distil.models.generation`):
so a resumed run samples exactly what the uninterrupted one did, and two processes sample what one
does. Under FSDP the student generates with its root's parameters gathered and every process runs the
same number of decoding steps (``synced_gpus``); the teacher, a root of its own, gathers in its forward.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from distil.errors import ConfigError
from distil.losses.baselines import IGNORE_INDEX, scored_next_token_labels
from distil.losses.divergences import Divergence, divergence
from distil.methods.base import LogitMethod, MethodContext
from distil.methods.kd import check_divergence_settings
from distil.models.generation import Sampling, complete, row_seed
from distil.types import Batch, Features, LossOutput, Runtime, RunView

__all__ = ["GKD", "GKDConfig"]


@dataclass
class GKDConfig:
    """On-policy (and sequence-level) distillation settings.

    Attributes:
        lmbda: Probability that a step trains on the student's own completions (GKD's lambda; 0: never).
        seq_kd: On the other steps, train on the teacher's completions instead of the dataset's.
        divergence: The token-level divergence between teacher ``p`` and student ``q``
            (`distil.losses.divergences`); GKD's generalized ``jsd`` by default.
        beta: ``jsd``'s weight of the teacher in the mixture (0: forward KL, 1: reverse KL).
        skew_alpha: The skew of ``skew_kl`` / ``skew_reverse_kl``.
        temperature: Softmax temperature of both models inside the divergence.
        sample_temperature: Temperature of sampling completions (0: greedy).
        top_p: Nucleus sampling of completions (1: the whole distribution).
        max_new_tokens: Longest completion sampled.
    """

    lmbda: float = 0.5
    seq_kd: bool = False
    divergence: Divergence = "jsd"
    beta: float = 0.5
    skew_alpha: float = 0.1
    temperature: float = 1.0
    sample_temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64

    name: ClassVar[str] = "gkd"

    def __post_init__(self) -> None:
        if not 0 <= self.lmbda <= 1:
            raise ConfigError(f"method.lmbda must be in [0, 1], got {self.lmbda}.")
        check_divergence_settings(self.divergence, self.beta, self.skew_alpha)
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}.")
        try:
            self.sampling()
        except ConfigError as err:
            raise ConfigError(f"method.{err}") from None

    def sampling(self) -> Sampling:
        """The sampling settings of the completions."""
        return Sampling(self.sample_temperature, self.top_p, self.max_new_tokens)

    @classmethod
    def tiny(cls) -> GKDConfig:
        """Settings for fast generic tests: every step on-policy, short completions."""
        return cls(lmbda=1.0, max_new_tokens=4)

    def check_run(self, run: RunView) -> None:
        """GKD completes the prompts of chat data."""
        if run.task_kind != "chat":
            raise ConfigError(
                "Method 'gkd' completes the prompts of conversations: set data.task=chat (rows with "
                f"'messages' or 'prompt'/'completion'), not data.task={run.task}."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """The teacher scores sequences sampled during training."""
        return "scores completions sampled during training" if self.lmbda > 0 or self.seq_kd else None


class GKD(LogitMethod):
    """The divergence on completions the student (or the teacher, or the data) wrote."""

    name: ClassVar[str] = "gkd"
    Config: ClassVar[type[GKDConfig]] = GKDConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "gkd"

    def __init__(self, cfg: GKDConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg = cfg
        self.student, self.teacher = ctx.student, ctx.teacher
        tok = ctx.tokenizer
        pad = None if tok is None else tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self.runtime: Runtime | None = None
        self.steps_done = 0
        self.last: dict[str, float] = {"on_policy": 0.0, "gen_tokens": 0.0, "gen_tokens_per_s": 0.0}

    @property
    def corrupts_inputs(self) -> bool:
        """The batch's completions are replaced by sampled ones (on-policy or sequence-level steps)."""
        return self.cfg.lmbda > 0 or self.cfg.seq_kd

    def attach(self, runtime: Runtime) -> None:
        """Keep the seed and how the student generates outside the training step."""
        self.runtime = runtime

    def on_step_end(self, step: int) -> None:
        """Count steps: the next step's coin and seeds derive from it."""
        self.steps_done = step

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The steps taken (a resumed run continues the same coins and seeds)."""
        return {"steps_done": torch.tensor(self.steps_done)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the step count."""
        self.steps_done = int(state["steps_done"])

    def _source(self) -> str:
        """Whose completions this step trains on: ``student``, ``teacher`` or ``data``."""
        assert self.runtime is not None, "the loop attaches the runtime before training"
        coin = torch.Generator().manual_seed(row_seed(self.runtime.seed, self.steps_done, 0))
        if float(torch.rand((), generator=coin, dtype=torch.float64)) < self.cfg.lmbda:
            return "student"
        return "teacher" if self.cfg.seq_kd else "data"

    def prepare_batch(self, batch: Batch) -> Batch:
        """Replace the last assistant turn by a sampled completion on on-policy (and ``seq_kd``) steps."""
        source = self._source()
        self.last = {"on_policy": float(source == "student"), "gen_tokens": 0.0, "gen_tokens_per_s": 0.0}
        if source == "data":
            return batch
        assert self.runtime is not None and batch.prompt_lengths is not None and batch.idx is not None
        prompts = [
            ids[:n].tolist() for ids, n in zip(batch.input_ids, batch.prompt_lengths.tolist(), strict=True)
        ]
        seeds = [row_seed(self.runtime.seed, self.steps_done, 1, int(i)) for i in batch.idx.tolist()]
        start = time.perf_counter()
        sampling, synced = self.cfg.sampling(), self.runtime.synced
        if source == "student":
            student = self.student
            outs = self.runtime.call_student(
                lambda: complete(student, prompts, seeds, sampling, self.pad_token_id, synced=synced)
            )
        else:
            outs = complete(self.teacher, prompts, seeds, sampling, self.pad_token_id, synced=synced)
        seconds = time.perf_counter() - start
        tokens = sum(len(o) for o in outs)
        self.last |= {"gen_tokens": tokens / len(outs), "gen_tokens_per_s": tokens / max(seconds, 1e-9)}
        return completed_batch(batch, prompts, outs, self.pad_token_id)

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """The divergence over the completion tokens; the step's generation figures are logged beside it."""
        assert student.logits is not None and teacher is not None and teacher.logits is not None
        assert batch.labels is not None
        c = self.cfg
        soft = divergence(
            student.logits, teacher.logits, c.divergence, temperature=c.temperature,
            mask=batch.labels != IGNORE_INDEX, beta=c.beta, alpha=c.skew_alpha,
        )  # fmt: skip
        stats = {k: torch.tensor(v, device=soft.device) for k, v in self.last.items()}
        return LossOutput(total=soft, parts={"divergence": soft, **stats})


def completed_batch(batch: Batch, prompts: list[list[int]], completions: list[list[int]], pad: int) -> Batch:
    """Prompts followed by their completions, right-padded; labels score the completion tokens only."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        completion[i, len(p) : len(r)] = 1
    device = batch.input_ids.device
    labels = scored_next_token_labels(ids, completion)
    return batch.replace(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        labels=labels.to(device),
        token_type_ids=None,
    )
