"""TED's stage plan: Stage 0 (fine-tune teacher and student), Stage I (filters, each model frozen), Stage II.

Each stage is an ordinary run of the shared loop in ``RUN_DIR/stages/<name>`` (`distil.training.stages`):

==================  =========  ================================================  ==========================
stage               method     student of the run (what trains)                  teacher of the run
==================  =========  ================================================  ==========================
teacher-finetune    finetune   ``models.teacher``, whole model                   none
student-finetune    finetune   ``models.student`` spec, whole model              fine-tuned teacher (layers)
teacher-filters     ted        fine-tuned teacher, frozen; filters + heads       same (loaded, unused)
student-filters     ted        fine-tuned student, frozen; filters + heads       fine-tuned teacher (d_f)
distill             ted        student-filters' student + its filters            fine-tuned teacher + its
                                                                                 Stage-I filters (frozen)
==================  =========  ================================================  ==========================

The layer map is resolved here, once, into an explicit list, so a map that does not fit the two models
fails before any training.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig

from distil.config import RunConfig, StudentConfig
from distil.errors import ConfigError, ModelError
from distil.losses.hidden import resolve_layer_map
from distil.methods.finetune import FinetuneConfig
from distil.models.architectures import num_layers
from distil.models.loading import resolve_model_path
from distil.training.stages import stage_dir

if TYPE_CHECKING:
    from distil.methods.ted import TEDConfig

__all__ = ["check_single_stage", "plan_stages"]


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


def _pretrained(path: str) -> StudentConfig:
    return StudentConfig(init="pretrained", path=path)


def _run(cfg: RunConfig, teacher: str | None, student: StudentConfig, method: Any, *, side: str) -> RunConfig:
    """A copy of ``cfg`` for one stage; ``side='teacher'`` applies the ``method.teacher_*`` settings."""
    out = copy.deepcopy(cfg)
    out.models.teacher, out.models.student, out.method = teacher, student, method
    out.train.cache_teacher = False  # only Stage II has a teacher, and it needs more than logits
    m: TEDConfig = cfg.method
    if side == "teacher":
        out.train.lr = m.teacher_lr or out.train.lr
        out.train.batch_size = m.teacher_batch_size or out.train.batch_size
        out.train.epochs = m.teacher_epochs or out.train.epochs
        if m.teacher_warmup_ratio is not None:
            out.train.warmup_ratio = m.teacher_warmup_ratio
    return out


def _filters_run(out: RunConfig) -> RunConfig:
    # Stage I freezes the model it filters, so every evaluation scores the same and best-checkpoint
    # selection would keep the first epoch's filters: export the final ones (released: "save last").
    out.eval.select = "last"
    return out


def plan_stages(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """The runs of ``method.stage`` ``all`` (every stage) or ``finetune`` (Stage 0 only).

    Raises:
        ConfigError: Nothing to run, a task without labels (a corpus), or a layer map that fits neither model.
        ModelError: A model config cannot be read.
    """
    m: TEDConfig = cfg.method
    if cfg.data.task == "corpus":
        raise ConfigError(
            "Method 'ted' needs a task with a loss (classification, regression, data.task=squad/squad_v2 "
            "or data.task=lm), not a corpus."
        )
    if not cfg.models.teacher:
        raise ConfigError("Method 'ted' needs models.teacher.")
    depth_t = _depth(cfg.models.teacher, "teacher")
    layers = resolve_layer_map(m.layer_map, depth_t, _student_depth(cfg.models.student, depth_t))
    root = cfg.run_dir
    plan: list[tuple[str, RunConfig]] = []
    teacher = cfg.models.teacher
    if m.finetune_teacher:
        plan.append(
            ("teacher-finetune", _run(cfg, None, _pretrained(teacher), FinetuneConfig(), side="teacher"))
        )
        teacher = str(stage_dir(root, "teacher-finetune") / "student")
    student = cfg.models.student
    if m.finetune_student:
        # models.teacher is the source of the student's layers (init: layers): the fine-tuned teacher,
        # as in the paper's BERT-6 setting and this project's KD configs.
        plan.append(("student-finetune", _run(cfg, teacher, student, FinetuneConfig(), side="student")))
        student = _pretrained(str(stage_dir(root, "student-finetune") / "student"))
    if m.stage == "finetune":
        if not plan:
            raise ConfigError(
                "method.stage=finetune with finetune_teacher and finetune_student off: nothing to run."
            )
        return plan
    ted = dataclasses.replace(m, layer_map=layers, student_depth=len(layers))
    t_filters, s_filters = m.teacher_filters, m.student_filters
    if not t_filters:
        method = dataclasses.replace(ted, stage="filters", side="teacher")
        plan.append(
            (
                "teacher-filters",
                _filters_run(_run(cfg, teacher, _pretrained(teacher), method, side="teacher")),
            )
        )
        t_filters = str(stage_dir(root, "teacher-filters") / "student" / "method.safetensors")
    if not s_filters:
        method = dataclasses.replace(ted, stage="filters", side="student")
        plan.append(("student-filters", _filters_run(_run(cfg, teacher, student, method, side="student"))))
        # Its exported student is the (unchanged) frozen student, with the filters beside it.
        student = _pretrained(str(stage_dir(root, "student-filters") / "student"))
        s_filters = str(stage_dir(root, "student-filters") / "student" / "method.safetensors")
    method = dataclasses.replace(ted, stage="distill", teacher_filters=t_filters, student_filters=s_filters)
    plan.append(("distill", _run(cfg, teacher, student, method, side="student")))
    return plan


def check_single_stage(cfg: RunConfig) -> None:
    """Reject a lone Stage-I run that would export the filters of its first evaluation.

    The backbone is frozen, so every evaluation scores the same and best-checkpoint selection keeps the
    first one; ``eval.select=last`` exports the final filters.
    """
    m: TEDConfig = cfg.method
    if m.stage == "filters" and cfg.eval.select != "last":
        raise ConfigError(
            "method.stage=filters trains filters on a frozen model, so every evaluation scores the same and "
            "selecting the best checkpoint would export the filters of the first evaluation: set "
            "eval.select=last."
        )
