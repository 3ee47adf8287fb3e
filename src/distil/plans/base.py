"""What a plan is: named steps, each an ordinary run of the loop, and where the result goes.

A plan config (the ``plan:`` section; one dataclass per plan module) turns a run config into a ``Plan``:
the list of ``Step`` s that `distil.plans.runner.run_plan` executes in order. A single-run method is a
plan of one step. A step's config may depend on earlier steps' results (the teacher-layer probe picks the
layer from the probe runs' losses); such a step carries a ``resolve`` function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from distil.run_config import RunConfig
    from distil.training.loop import RunResult

__all__ = ["Plan", "PlanConfig", "Step", "stage_dir"]


def stage_dir(root: str | Path, name: str) -> Path:
    """Where step ``name`` of the plan rooted at ``root`` runs."""
    return Path(root) / "stages" / name


@dataclass
class Step:
    """One run of a plan.

    Attributes:
        name: The step's name (its folder below ``RUN_DIR/stages``).
        config: Its run config (``run_dir`` set); with ``resolve``, a stand-in that shows the step's shape.
        resolve: Computes the real config from the results of the steps before it.
        check: Runs once the step has finished (or is reused) and raises to stop the plan there, when
            what the step produced must not feed the steps after it.
        action: Produces the step's finished folder instead of the training loop (one-shot pruning):
            called on process 0 alone with the step's config; it writes ``run_dir/student`` with its
            recipe last, as a finished run has it.
    """

    name: str
    config: RunConfig
    resolve: Callable[[Mapping[str, RunResult]], RunConfig] | None = None
    check: Callable[[RunResult], None] | None = None
    action: Callable[[RunConfig], None] | None = None


@dataclass
class Plan:
    """Steps to run in order, and what the whole plan leaves in its root folder.

    Attributes:
        root: The run directory of the whole plan.
        steps: The steps; a lone step whose ``run_dir`` is ``root`` is an ordinary single run.
        config: The config the final recipe records (the user's, including its plan section).
        export_last: Write the last step's student to ``root/student`` with a recipe of the whole plan.
        record: Which config the final recipe names: ``root`` (``config``) or ``last`` (the last step's
            resolved config, moved to ``root``: it shows what the plan chose).
    """

    root: Path
    steps: list[Step]
    config: RunConfig | None
    export_last: bool = True
    record: Literal["root", "last"] = "root"

    @property
    def single(self) -> bool:
        """One step that runs in the root itself."""
        return len(self.steps) == 1 and Path(self.steps[0].config.run_dir) == self.root


class PlanConfig(Protocol):
    """A plan's config dataclass (the ``plan:`` section)."""

    name: ClassVar[str]
    methods: ClassVar[tuple[str, ...]]  # methods the plan's steps run besides the config's own

    def check_run(self, cfg: RunConfig) -> None:
        """Raise ``ConfigError`` if the plan cannot run ``cfg`` (called when the config is built)."""
        ...

    def plan(self, cfg: RunConfig) -> Plan:
        """The steps of ``cfg`` (may read model configs, e.g. to resolve a layer map)."""
        ...

    def step_names(self, cfg: RunConfig) -> list[str]:
        """The names of the steps ``plan`` makes, without reading any model (for ``distil validate``)."""
        ...
