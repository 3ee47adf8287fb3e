"""The plan of one run: the method trains once, in the run directory itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from distil.plans.base import Plan, Step

if TYPE_CHECKING:
    from distil.run_config import RunConfig

__all__ = ["SinglePlan"]


@dataclass
class SinglePlan:
    """One run of the method, in the run directory itself (no settings)."""

    name: ClassVar[str] = "single"
    methods: ClassVar[tuple[str, ...]] = ()

    def check_run(self, cfg: RunConfig) -> None:
        """Any run config is a valid single run."""
        return None

    def plan(self, cfg: RunConfig) -> Plan:
        """The run itself."""
        return Plan(Path(cfg.run_dir), [Step("run", cfg)], cfg, export_last=False)

    def step_names(self, cfg: RunConfig) -> list[str]:
        """One step."""
        return ["run"]
