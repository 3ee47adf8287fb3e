"""Plans: work of several runs above the one-run training loop, and the one way into any run.

Every run goes through ``plan_for(cfg)`` and ``run_plan`` (``run(cfg)`` does both): a single-run method
is the plan of one step. The plan comes from the config's ``plan:`` section; without one, a method gets
its usual plan (``default_plan``).
"""

from __future__ import annotations

from typing import Any

from distil.errors import ConfigError, closest
from distil.plans.base import Plan, PlanConfig, Step, stage_dir
from distil.plans.homodistil import HomoDistilPlan
from distil.plans.layer_probe import LayerProbePlan
from distil.plans.oneshot import OneShotPrunePlan
from distil.plans.runner import run_plan, run_steps
from distil.plans.single import SinglePlan
from distil.plans.ted import TEDPlan
from distil.plans.tinybert import TinyBERTPlan
from distil.run_config import RunConfig
from distil.training.loop import RunResult

__all__ = [
    "PLANS",
    "Plan",
    "PlanConfig",
    "Step",
    "default_plan",
    "get_plan",
    "plan_for",
    "run",
    "run_plan",
    "run_steps",
    "stage_dir",
]

PLANS: dict[str, type[PlanConfig]] = {
    "homodistil": HomoDistilPlan,
    "layer_probe": LayerProbePlan,
    "oneshot_prune": OneShotPrunePlan,
    "single": SinglePlan,
    "ted": TEDPlan,
    "tinybert": TinyBERTPlan,
}

# Which plan other than ``single`` a method runs in when the config names none (its usual workflow).
_USUAL_PLANS = {"ted": "ted"}


def default_plan(method_name: str, method_cfg: Any, task: str) -> str:
    """The plan a run gets when its config has no ``plan:`` section.

    TED runs its stages; TinyBERT on a labelled task runs its two task stages; ``teacher_layer: auto``
    runs the teacher-layer probe; every other run is a single run.
    """
    if method_name == "tinybert" and task != "corpus":
        return "tinybert"
    if getattr(method_cfg, "teacher_layer", None) == "auto":
        return "layer_probe"
    return _USUAL_PLANS.get(method_name, "single")


def get_plan(name: str) -> type[PlanConfig]:
    """Look a plan up by name, suggesting the closest one on a typo."""
    if name not in PLANS:
        raise ConfigError(
            f"Unknown plan {name!r} (plan.name).{closest(name, PLANS)} Known: {', '.join(PLANS)}."
        )
    return PLANS[name]


def plan_for(cfg: RunConfig) -> Plan:
    """The plan of ``cfg``: its steps, in order."""
    plan_cfg = cfg.plan if cfg.plan is not None else SinglePlan()
    return plan_cfg.plan(cfg)


def run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunResult:
    """Run everything ``cfg`` asks for: its plan's steps, exporting the student to ``cfg.run_dir/student``."""
    return run_plan(plan_for(cfg), resume=resume, overwrite=overwrite, progress=progress)
