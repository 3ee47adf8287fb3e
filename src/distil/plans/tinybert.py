"""TinyBERT's task-specific plan: intermediate-layer distillation, then prediction-layer distillation.

On a labelled task TinyBERT distils the layers first (`distil.methods.tinybert`, the run's ``method:``
section) and then the logits (`distil.methods.tinybert_prediction`), starting from the first stage's
student. Both stages use the run's ``train`` settings. The intermediate stage exports its last student
(its classifier is untrained, so its dev score cannot choose a checkpoint). On a corpus (general
distillation) the layer stage runs alone (plan ``single``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from distil.errors import ConfigError
from distil.methods.tinybert_prediction import TinyBERTPredictionConfig
from distil.models.students import StudentConfig
from distil.plans.base import Plan, Step, stage_dir

if TYPE_CHECKING:
    from distil.run_config import RunConfig

__all__ = ["TinyBERTPlan"]


@dataclass
class TinyBERTPlan:
    """TinyBERT's task stages: intermediate-layer, then prediction-layer distillation.

    Attributes:
        prediction: Settings of the prediction-layer stage (its temperature).
    """

    prediction: TinyBERTPredictionConfig = field(default_factory=TinyBERTPredictionConfig)

    name: ClassVar[str] = "tinybert"
    methods: ClassVar[tuple[str, ...]] = ("tinybert_prediction",)

    def check_run(self, cfg: RunConfig) -> None:
        """The layer stage is the run's method; the prediction stage needs a labelled classification task."""
        if cfg.method_name != "tinybert":
            raise ConfigError(f"plan.name=tinybert runs method 'tinybert', not {cfg.method_name!r}.")
        if cfg.data.task == "corpus":
            raise ConfigError(
                "plan.name=tinybert is the task-specific plan (intermediate, then prediction stage); on a "
                "corpus the general stage runs alone: set plan.name=single."
            )

    def plan(self, cfg: RunConfig) -> Plan:
        """``intermediate`` in ``stages/intermediate``, then ``prediction`` from its student."""
        root = Path(cfg.run_dir)
        inter = copy.deepcopy(cfg)
        inter.run_dir, inter.plan = str(stage_dir(root, "intermediate")), None
        inter.eval.select = "last"
        inter.train.cache_teacher = False  # the layer stage needs hidden states
        pred = copy.deepcopy(cfg)
        pred.run_dir, pred.plan, pred.method = str(stage_dir(root, "prediction")), None, self.prediction
        pred.models.student = StudentConfig.pretrained(str(stage_dir(root, "intermediate") / "student"))
        return Plan(root, [Step("intermediate", inter), Step("prediction", pred)], cfg)

    def step_names(self, cfg: RunConfig) -> list[str]:
        """Both stages."""
        return ["intermediate", "prediction"]
