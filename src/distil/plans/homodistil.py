"""HomoDistil's plan: optionally fit the teacher's missing MLM head first, then prune while distilling.

A teacher saved with a trained LM head (every decoder, an encoder saved as ``...ForMaskedLM``) skips the
head stage whatever ``head_steps`` says, so ``pretrain/homodistil`` runs as it is on a Llama-style teacher.

Some teachers (sentence-embedding checkpoints such as the embedded all-MiniLM-L6-v2) are saved without the
MLM head that HomoDistil's KL term reads. With ``head_steps > 0`` a ``head`` stage
(`distil.methods.homodistil_head`) fits one on a frozen copy of the teacher; the ``prune`` stage (the run's
``homodistil`` method) then uses that model as its teacher and starts its student as a copy of it. With
``head_steps: 0`` the plan is the single prune run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from transformers import AutoConfig

from distil.errors import ConfigError, ModelError
from distil.methods.homodistil_head import HomoDistilHeadConfig
from distil.models.families import has_trained_lm_head
from distil.models.loading import resolve_model_path
from distil.models.students import StudentConfig
from distil.plans.base import Plan, Step, stage_dir

if TYPE_CHECKING:
    from distil.run_config import RunConfig

__all__ = ["HomoDistilPlan"]


@dataclass
class HomoDistilPlan:
    """HomoDistil with a head stage first: fit the teacher's missing MLM head, then prune while distilling.

    Attributes:
        head_steps: Steps of the head stage on the frozen teacher (0: no head stage).
        head_lr: Learning rate of the head stage (default: ``train.lr``).
    """

    head_steps: int = 0
    head_lr: float | None = None

    name: ClassVar[str] = "homodistil"
    methods: ClassVar[tuple[str, ...]] = ("homodistil_head",)

    def __post_init__(self) -> None:
        if self.head_steps < 0:
            raise ConfigError(f"plan.head_steps must be >= 0, got {self.head_steps}.")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ConfigError(f"plan.head_lr must be > 0, got {self.head_lr}.")

    def check_run(self, cfg: RunConfig) -> None:
        """The prune stage is the run's ``homodistil`` method; the head stage needs a corpus."""
        if cfg.method_name != "homodistil":
            raise ConfigError(f"plan.name=homodistil runs method 'homodistil', not {cfg.method_name!r}.")
        if self.head_steps and cfg.data.task != "corpus":
            raise ConfigError("plan.head_steps fits an MLM head on a corpus; set it to 0 on labelled tasks.")

    def plan(self, cfg: RunConfig) -> Plan:
        """``head`` then ``prune`` if ``head_steps > 0`` and the teacher lacks a head; else the prune run."""
        root = Path(cfg.run_dir)
        if self.head_steps == 0 or self._teacher_has_head(cfg):
            alone = copy.deepcopy(cfg)
            alone.plan = None
            return Plan(root, [Step("run", alone)], cfg, export_last=False)
        head = copy.deepcopy(cfg)
        head.run_dir, head.plan = str(stage_dir(root, "head")), None
        head.method = HomoDistilHeadConfig(mlm_probability=cfg.method.mlm_probability)
        head.models.student = StudentConfig(init="copy")
        head.train.max_steps = self.head_steps
        head.train.lr = self.head_lr or cfg.train.lr
        head.eval.select = "last"
        prune = copy.deepcopy(cfg)
        prune.run_dir, prune.plan = str(stage_dir(root, "prune")), None
        prune.models.teacher = str(stage_dir(root, "head") / "student")
        return Plan(root, [Step("head", head), Step("prune", prune)], cfg)

    @staticmethod
    def _teacher_has_head(cfg: RunConfig) -> bool:
        """The teacher's checkpoint has a trained LM head (a decoder, or an encoder saved with its MLM head).

        Then the head stage has nothing to fit and is skipped, so one config serves both kinds of teacher.
        """
        assert cfg.models.teacher
        try:
            config = AutoConfig.from_pretrained(resolve_model_path(cfg.models.teacher))
        except (OSError, ValueError) as err:
            raise ModelError(f"Cannot read the teacher config {cfg.models.teacher!r}: {err}") from err
        if has_trained_lm_head(config):
            print("[distil] homodistil: the teacher has a trained LM head; no head stage (plan.head_steps).")
            return True
        return False

    def step_names(self, cfg: RunConfig) -> list[str]:
        """``head`` and ``prune``, or the prune run alone."""
        return ["head", "prune"] if self.head_steps else ["run"]
