"""TED's plan: Stage 0 (fine-tune teacher and student), Stage I (filters, each model frozen), Stage II.

Each stage is an ordinary run of the shared loop in ``RUN_DIR/stages/<name>``:

==================  ===========  ================================================  ========================
stage               method       student of the run (what trains)                  teacher of the run
==================  ===========  ================================================  ========================
teacher-finetune    finetune     ``models.teacher``, whole model                   none
student-finetune    finetune     ``models.student`` spec, whole model              fine-tuned teacher
teacher-filters     ted_filters  fine-tuned teacher, frozen; filters + heads       same (loaded, unused)
student-filters     ted_filters  fine-tuned student, frozen; filters + heads       fine-tuned teacher (d_f)
distill             ted          student-filters' student + its filters            fine-tuned teacher + its
                                                                                   Stage-I filters (frozen)
==================  ===========  ================================================  ========================

The run's ``method:`` section is Stage II's (``ted``); the filter stages take its layer map, filter type
and width. The layer map is resolved here, once, into an explicit list, so a map that does not fit the
two models fails before any training. Filters given in ``method.teacher_filters`` /
``method.student_filters`` skip that side's Stage I.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from transformers import AutoConfig

from distil.errors import ConfigError, ModelError, TrainingError
from distil.methods._ted_heads import Pooling
from distil.methods.finetune import FinetuneConfig
from distil.methods.ted import TEDConfig
from distil.methods.ted_filters import CHANCE_NOTE, TEDFiltersConfig
from distil.models.families import num_layers
from distil.models.layer_maps import resolve_layer_map
from distil.models.loading import resolve_model_path
from distil.models.students import StudentConfig
from distil.plans.base import Plan, Step, stage_dir

if TYPE_CHECKING:
    from distil.run_config import RunConfig
    from distil.training.loop import RunResult

__all__ = ["TEDPlan"]


def _depth(name: str, what: str) -> int:
    path = resolve_model_path(name)
    try:
        return num_layers(AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as err:
        raise ModelError(f"Cannot read the {what} config {name!r} to plan TED's stages: {err}") from err


def _student_depth(spec: StudentConfig, teacher_depth: int) -> int:
    if spec.init == "pretrained":
        assert spec.path is not None
        return _depth(spec.path, "student")
    if spec.init == "copy":
        return teacher_depth
    if spec.layers is not None:
        return len(spec.layers)
    assert spec.num_layers is not None
    return spec.num_layers


@dataclass
class TEDPlan:
    """TED's stages: fine-tune both models, learn filters on each, then distil (Stages 0, I, II).

    Defaults: every stage, as in the paper.

    Attributes:
        finetune_teacher: Stage 0 for the teacher: fine-tune ``models.teacher`` first. Off: it is already
            fine-tuned on the task.
        finetune_student: Stage 0 for the student (the paper's choice; it helps the student filters).
        stop_after: ``finetune``: run Stage 0 only; ``null``: every stage.
        teacher_lr: Learning rate of the teacher's stages (fine-tuning, filters); default ``train.lr``.
        teacher_batch_size: Batch size of the teacher's stages; default ``train.batch_size``.
        teacher_epochs: Epochs of the teacher's stages; default ``train.epochs``.
        teacher_warmup_ratio: Warm-up ratio of the teacher's stages; default ``train.warmup_ratio``.
        head_dropout: Dropout of the Stage-I classification heads (default: the model's classifier dropout).
        filter_pooling: How the Stage-I classification heads pool tokens: ``auto`` (mean over real tokens
            for encoders, last real token for decoders), ``first`` (token 0, the released code), ``mean``,
            ``last``.
        allow_chance_filters: Go on to Stage II even when a Stage-I filter ended at chance-level loss.
            Off: the plan stops after that filter stage with an error naming the layers, since Stage II
            would align filters that carry nothing from those layers.
    """

    finetune_teacher: bool = True
    finetune_student: bool = True
    stop_after: Literal["finetune"] | None = None
    teacher_lr: float | None = None
    teacher_batch_size: int | None = None
    teacher_epochs: int | None = None
    teacher_warmup_ratio: float | None = None
    head_dropout: float | None = None
    filter_pooling: Pooling = "auto"
    allow_chance_filters: bool = False

    name: ClassVar[str] = "ted"
    methods: ClassVar[tuple[str, ...]] = ("finetune", "ted_filters")

    def __post_init__(self) -> None:
        for field in ("teacher_batch_size", "teacher_epochs"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ConfigError(f"plan.{field} must be >= 1, got {value}.")
        if self.teacher_lr is not None and not self.teacher_lr > 0:
            raise ConfigError(f"plan.teacher_lr must be > 0, got {self.teacher_lr}.")
        for field in ("head_dropout", "teacher_warmup_ratio"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"plan.{field} must be in [0, 1), got {value}.")
        if self.stop_after == "finetune" and not (self.finetune_teacher or self.finetune_student):
            raise ConfigError(
                "plan.stop_after=finetune with plan.finetune_teacher and finetune_student off: nothing to "
                "run."
            )

    def check_run(self, cfg: RunConfig) -> None:
        """The TED plan runs the ``ted`` method's Stage II after its other stages."""
        if cfg.method_name != "ted":
            raise ConfigError(f"plan.name=ted runs method 'ted', not {cfg.method_name!r}.")
        if not cfg.models.teacher:
            raise ConfigError("Method 'ted' needs models.teacher.")

    def _run(
        self, cfg: RunConfig, teacher: str | None, student: StudentConfig, method: Any, side: str
    ) -> RunConfig:
        """A copy of ``cfg`` for one stage; ``side='teacher'`` applies the ``teacher_*`` settings."""
        out = copy.deepcopy(cfg)
        out.models.teacher, out.models.student, out.method, out.plan = teacher, student, method, None
        out.train.cache_teacher = False  # only Stage II has a teacher, and it needs more than logits
        if side == "teacher":
            out.train.lr = self.teacher_lr or out.train.lr
            out.train.batch_size = self.teacher_batch_size or out.train.batch_size
            out.train.epochs = self.teacher_epochs or out.train.epochs
            if self.teacher_warmup_ratio is not None:
                out.train.warmup_ratio = self.teacher_warmup_ratio
        return out

    def plan(self, cfg: RunConfig) -> Plan:
        """The stage runs; each writes to ``RUN_DIR/stages/<name>``.

        Raises:
            ConfigError: A layer map that fits neither model.
            ModelError: A model config cannot be read.
        """
        m: TEDConfig = cfg.method
        assert cfg.models.teacher
        root = Path(cfg.run_dir)
        depth_t = _depth(cfg.models.teacher, "teacher")
        layers = resolve_layer_map(m.layer_map, depth_t, _student_depth(cfg.models.student, depth_t))
        steps: list[Step] = []

        def add(name: str, run: RunConfig, check: Callable[[RunResult], None] | None = None) -> None:
            run.run_dir = str(stage_dir(root, name))
            steps.append(Step(name, run, check=check))

        gate = None if self.allow_chance_filters else _refuse_chance_filters

        teacher = cfg.models.teacher
        if self.finetune_teacher:
            add(
                "teacher-finetune",
                self._run(cfg, None, StudentConfig.pretrained(teacher), FinetuneConfig(), "teacher"),
            )
            teacher = str(stage_dir(root, "teacher-finetune") / "student")
        student = cfg.models.student
        if self.finetune_student:
            # models.teacher is the source of the student's layers (init: layers): the fine-tuned teacher,
            # as in the paper's BERT-6 setting and this project's KD configs.
            add("student-finetune", self._run(cfg, teacher, student, FinetuneConfig(), "student"))
            student = StudentConfig.pretrained(str(stage_dir(root, "student-finetune") / "student"))
        if self.stop_after == "finetune":
            # The exported student is Stage 0's fine-tuned one: its recipe and card say so, not TED.
            return Plan(root, steps, cfg, record="last")
        filters = TEDFiltersConfig(
            layer_map=layers, student_depth=len(layers), filter_type=m.filter_type, filter_dim=m.filter_dim,
            head_dropout=self.head_dropout, pooling=self.filter_pooling,
        )  # fmt: skip
        t_filters, s_filters = m.teacher_filters, m.student_filters
        if not t_filters:
            run = self._run(cfg, teacher, StudentConfig.pretrained(teacher), filters, "teacher")
            run.method = dataclasses.replace(filters, side="teacher")
            add("teacher-filters", _export_last_filters(run), gate)
            t_filters = str(stage_dir(root, "teacher-filters") / "student" / "method.safetensors")
        if not s_filters:
            run = self._run(cfg, teacher, student, dataclasses.replace(filters, side="student"), "student")
            add("student-filters", _export_last_filters(run), gate)
            # Its exported student is the (unchanged) frozen student, with the filters beside it.
            student = StudentConfig.pretrained(str(stage_dir(root, "student-filters") / "student"))
            s_filters = str(stage_dir(root, "student-filters") / "student" / "method.safetensors")
        distill = dataclasses.replace(
            m, layer_map=layers, teacher_filters=t_filters, student_filters=s_filters
        )
        add("distill", self._run(cfg, teacher, student, distill, "student"))
        return Plan(root, steps, cfg)

    def step_names(self, cfg: RunConfig) -> list[str]:
        """The stages this config runs."""
        m: TEDConfig = cfg.method
        names = ["teacher-finetune"] if self.finetune_teacher else []
        names += ["student-finetune"] if self.finetune_student else []
        if self.stop_after == "finetune":
            return names
        names += [] if m.teacher_filters else ["teacher-filters"]
        names += [] if m.student_filters else ["student-filters"]
        return [*names, "distill"]


def _refuse_chance_filters(result: RunResult) -> None:
    """Stop the plan when a filter stage's notes say a filter ended at chance-level loss."""
    recipe = result.student_dir / "recipe.json"
    warnings = json.loads(recipe.read_text(encoding="utf-8")).get("results", {}).get("warnings") or []
    chance = [w for w in warnings if str(w).startswith(CHANCE_NOTE)]
    if chance:
        layers = ", ".join(str(w)[len(CHANCE_NOTE) :].split(" ", 1)[0] for w in chance)
        raise TrainingError(
            f"TED's filters on layer(s) {layers} of {result.run_dir} ended at chance-level loss: Stage II "
            "would align filters that carry nothing from those layers. Redo that stage with a higher "
            "learning rate or more epochs (--overwrite), or set plan.allow_chance_filters=true to distil "
            "from them anyway."
        )


def _export_last_filters(run: RunConfig) -> RunConfig:
    # Stage I freezes the model it filters, so every evaluation scores the same and best-checkpoint
    # selection would keep the first epoch's filters: export the final ones (released: "save last").
    run.eval.select = "last"
    return run
