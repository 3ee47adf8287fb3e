"""Turn a validated ``RunConfig`` into task data, models and a method, before anything is written to disk."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.errors import ConfigError, ModelError
from distil.methods import Method, MethodContext, get_method
from distil.models.families import family_of, num_layers
from distil.models.heads import HEADS, head_of_architectures
from distil.models.layer_maps import paper_layer_map, uniform_layer_map, validate_layer_list
from distil.models.loading import (
    check_max_length,
    check_same_vocabulary,
    check_tokenizer,
    ensure_pad_token,
    freeze,
    load_model,
    load_tokenizer,
    set_label_names,
)
from distil.models.students import StudentConfig, student_copy, student_from_config, student_from_layers
from distil.run_config import RunConfig
from distil.tasks import Task, load_task
from distil.tasks.chat import ChatData
from distil.tasks.chat.render import check_same_template
from distil.tasks.classification import ClassificationTask
from distil.training.precision import Precision

__all__ = ["RunParts", "build_run", "build_student", "describe"]


@dataclass
class RunParts:
    """Everything the loop trains and evaluates with."""

    task: Task
    tokenizer: PreTrainedTokenizerBase
    student: PreTrainedModel
    teacher: PreTrainedModel | None
    method: Method
    student_layers: list[int] | None
    notes: list[str] = field(default_factory=list)  # what was decided for the user (logged, recorded)


def _teacher_layers_for(spec: StudentConfig, teacher_depth: int) -> list[int]:
    if spec.layers is not None:
        return validate_layer_list(spec.layers, teacher_depth)
    assert spec.num_layers is not None
    scheme = paper_layer_map if spec.layer_map == "paper" else uniform_layer_map
    return scheme(teacher_depth, spec.num_layers)


def build_student(
    spec: StudentConfig,
    source: PreTrainedModel | None,
    task: Task,
    head: str,
    attn: str | None,
    *,
    dtype: str | None = None,
    meta: bool = False,
) -> tuple[PreTrainedModel, list[int] | None]:
    """Build the student from ``source`` (the loaded teacher checkpoint) as ``spec`` says."""
    if spec.init == "pretrained":
        assert spec.path is not None
        model = load_model(
            spec.path,
            head=head,
            num_labels=task.num_labels,
            is_regression=task.is_regression,
            attn_implementation=attn,
            dtype=dtype,
            meta=meta,
        )
        return model, None
    if source is None:
        raise ConfigError(f"models.student.init={spec.init} builds the student from models.teacher; set it.")
    if spec.init == "copy":
        return student_copy(source), None
    if spec.init == "layers":
        layers = _teacher_layers_for(spec, num_layers(source.config))
        return student_from_layers(source, layers), layers
    assert spec.num_layers is not None
    student = student_from_config(
        source.config,
        num_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        head=head,
        num_labels=task.num_labels if head == "seq" else None,
    )
    return student, None


def _check_teacher_head(path: str, teacher: PreTrainedModel, head: str) -> None:
    # A teacher must carry a trained head of the task's kind; a checkpoint saved without one would get a
    # random head that the student would then imitate.
    architectures: list[str] = list(getattr(teacher.config, "architectures", None) or [])
    if not HEADS[head].must_be_saved or head_of_architectures(architectures) == head:
        return
    raise ModelError(
        f"Teacher {path!r} has no trained {head!r} head (architectures: {architectures}). Fine-tune it on "
        f"the task first, e.g. `distil finetune data.task=... models.student.init=pretrained "
        f"models.student.path={path}`, and pass the exported run_dir/student as models.teacher."
    )


def build_run(
    cfg: RunConfig,
    *,
    precision: Precision | None = None,
    meta: bool = False,
    prepare_order: Callable[[], AbstractContextManager[Any]] = nullcontext,
    prepare: bool = True,
) -> RunParts:
    """Load and validate data, models and method; raises before any file is written.

    Args:
        cfg: The run.
        precision: Dtypes of the student and the teacher (``None``: as their checkpoints store them).
        meta: Build the models on the meta device (shapes only): their weights come later from process 0
            (``engine.ram_efficient_loading``).
        prepare_order: Context around tokenisation (e.g. process 0 first, filling the shared cache).
        prepare: Tokenise the data; ``False`` with ``meta`` checks everything else that training checks
            before its first step from the checkpoints' config and tokenizer files alone (`distil validate`).
    """
    method_cls = get_method(cfg.method_name)
    task = load_task(cfg.data, cfg.train.seed)
    head = method_cls.model_head(task.head)
    attn = cfg.models.attn_implementation
    spec = cfg.models.student
    # The student is built in its own dtype (float32 master weights unless bf16-pure): a teacher it is cut
    # from is loaded in that dtype too and cast to the teacher's dtype afterwards.
    student_dtype = _dtype_name(precision.param_dtype) if precision is not None else None
    source = None
    if method_cls.uses_teacher or spec.init != "pretrained":
        if not cfg.models.teacher:
            raise ConfigError(f"Method {cfg.method_name!r} needs models.teacher.")
        source = load_model(
            cfg.models.teacher,
            head=head,
            num_labels=task.num_labels if head == "seq" else None,
            is_regression=task.is_regression,
            attn_implementation=attn,
            dtype=student_dtype if spec.init != "pretrained" else None,
            meta=meta,
        )
        family_of(source)
        task.check_model(source.config, f"models.teacher {cfg.models.teacher!r}")
    student, layers = build_student(spec, source, task, head, attn, dtype=student_dtype, meta=meta)
    task.check_model(student.config, "the student")
    if precision is not None:
        _cast(student, precision.param_dtype)
    teacher = None
    if method_cls.uses_teacher:
        assert source is not None and cfg.models.teacher
        _check_teacher_head(cfg.models.teacher, source, head)
        if precision is not None:
            _cast(source, precision.teacher_dtype)
        teacher = freeze(source)
    tokenizer_source = str(spec.path) if spec.init == "pretrained" else str(cfg.models.teacher)
    tokenizer = load_tokenizer(tokenizer_source)
    check_tokenizer(tokenizer, student, tokenizer_source)
    if teacher is not None and spec.init == "pretrained":
        teacher_tokenizer = load_tokenizer(str(cfg.models.teacher))
        check_same_vocabulary(teacher_tokenizer, tokenizer)
        if isinstance(cfg.data, ChatData):
            check_same_template(teacher_tokenizer, tokenizer, cfg.data.chat_template)
    check_max_length(student.config, cfg.data.max_length, "the student")
    if teacher is not None:
        check_max_length(teacher.config, cfg.data.max_length, f"the teacher {cfg.models.teacher!r}")
    pad_note = ensure_pad_token(tokenizer, [m for m in (student, teacher) if m is not None], tokenizer_source)
    labels = task.spec.label_names if isinstance(task, ClassificationTask) else None
    if labels and head == "seq":  # classification: the exported model names the data's classes
        if teacher is not None:
            set_label_names(teacher, labels, f"The teacher {cfg.models.teacher!r}")
        set_label_names(student, labels, "The student")
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        is_regression=task.is_regression,
        num_labels=task.num_labels,
        tokenizer=tokenizer,
    )
    method = method_cls(cfg.method, ctx)
    if prepare:
        with prepare_order():
            task.prepare(tokenizer, cfg.data.max_length)
    notes = [*task.notes, *([pad_note] if pad_note else [])]
    return RunParts(task, tokenizer, student, teacher, method, layers, notes)


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    model.to(dtype)  # in place (nn.Module.to), whatever transformers' wrapper of it declares


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(parts: RunParts, cfg: RunConfig) -> dict[str, Any]:
    """A short summary of what was built, for the recipe file."""
    return {
        **parts.task.describe(),
        "teacher": cfg.models.teacher if parts.teacher is not None else None,
        "student_init": cfg.models.student.init,
        "student_teacher_layers": parts.student_layers,
        "pad_token": parts.tokenizer.pad_token,
        "notes": parts.notes,
        "run_dir": str(Path(cfg.run_dir)),
    }
