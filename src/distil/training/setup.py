"""Turn a validated ``RunConfig`` into data, models and a method, before anything is written to disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distil.config import RunConfig, StudentConfig
from distil.data.batching import tokenize
from distil.data.sources import load_custom, load_glue_split, resolve_data_dir, subset
from distil.data.tasks import TaskSpec, custom_task, get_task
from distil.errors import ConfigError, ModelError
from distil.methods import Method, MethodContext, get_method
from distil.models.architectures import arch_spec, num_layers
from distil.models.loading import check_same_vocabulary, freeze, load_model, load_tokenizer
from distil.models.students import (
    paper_layer_map,
    student_copy,
    student_from_config,
    student_from_layers,
    uniform_layer_map,
    validate_layer_list,
)

__all__ = ["RunParts", "build_run", "build_student", "load_task_data"]


@dataclass
class RunParts:
    """Everything the loop trains and evaluates with."""

    task: TaskSpec
    tokenizer: PreTrainedTokenizerBase
    train_set: Dataset
    dev_set: Dataset | None
    student: PreTrainedModel
    teacher: PreTrainedModel | None
    method: Method
    student_layers: list[int] | None


def load_task_data(cfg: RunConfig) -> tuple[TaskSpec, Dataset, Dataset | None]:
    """Raw train and dev splits of the configured task (validated by the loaders)."""
    data = cfg.data
    if data.task == "custom":
        assert data.train_file and data.text_columns
        task = custom_task(
            tuple(data.text_columns),
            data.label_column,
            is_regression=data.is_regression,
            label_names=tuple(data.label_names) if data.label_names else None,
            train_file=data.train_file,
        )
        train = load_custom(data.train_file, task)
        dev = load_custom(data.dev_file, task) if data.dev_file else None
    else:
        task = get_task(data.task)
        data_dir = resolve_data_dir(data.data_dir)
        train = load_glue_split(task, "train", data_dir)
        dev = load_glue_split(task, task.dev_splits[0], data_dir)
    train = subset(train, data.train_subset, cfg.train.seed)
    dev = subset(dev, data.dev_subset, cfg.train.seed) if dev is not None else None
    return task, train, dev


def _teacher_layers_for(spec: StudentConfig, teacher_depth: int) -> list[int]:
    if spec.layers is not None:
        return validate_layer_list(spec.layers, teacher_depth)
    assert spec.num_layers is not None
    scheme = paper_layer_map if spec.layer_map == "paper" else uniform_layer_map
    return scheme(teacher_depth, spec.num_layers)


def build_student(
    spec: StudentConfig, source: PreTrainedModel | None, task: TaskSpec, attn: str
) -> tuple[PreTrainedModel, list[int] | None]:
    """Build the student from ``source`` (the loaded teacher checkpoint) as ``spec`` says."""
    if spec.init == "pretrained":
        assert spec.path is not None
        model = load_model(
            spec.path,
            head="seq",
            num_labels=task.num_labels,
            is_regression=task.is_regression,
            attn_implementation=attn,
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
        head="seq",
        num_labels=task.num_labels,
    )
    return student, None


def _check_teacher_head(path: str, teacher: PreTrainedModel) -> None:
    architectures: list[str] = list(getattr(teacher.config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"Teacher {path!r} has no trained sequence-classification head "
            f"(architectures: {architectures}). Fine-tune it on the task first, e.g. `distil finetune "
            f"data.task=... models.student.init=pretrained models.student.path={path}`, and pass the "
            "exported run_dir/student as models.teacher."
        )


def build_run(cfg: RunConfig) -> RunParts:
    """Load and validate data, models and method; raises before any file is written."""
    method_cls = get_method(cfg.method_name)
    task, train_raw, dev_raw = load_task_data(cfg)
    attn = cfg.models.attn_implementation
    spec = cfg.models.student
    source = None
    if method_cls.uses_teacher or spec.init != "pretrained":
        if not cfg.models.teacher:
            raise ConfigError(f"Method {cfg.method_name!r} needs models.teacher.")
        source = load_model(
            cfg.models.teacher,
            head="seq",
            num_labels=task.num_labels,
            is_regression=task.is_regression,
            attn_implementation=attn,
        )
        arch_spec(source)
    student, layers = build_student(spec, source, task, attn)
    teacher = None
    if method_cls.uses_teacher:
        assert source is not None and cfg.models.teacher
        _check_teacher_head(cfg.models.teacher, source)
        teacher = freeze(source)
    tokenizer = load_tokenizer(spec.path if spec.init == "pretrained" else str(cfg.models.teacher))
    if teacher is not None and spec.init == "pretrained":
        check_same_vocabulary(load_tokenizer(str(cfg.models.teacher)), tokenizer)
    ctx = MethodContext(
        student=student, teacher=teacher, is_regression=task.is_regression, num_labels=task.num_labels
    )
    method = method_cls(cfg.method, ctx)
    train_set = tokenize(train_raw, tokenizer, task, cfg.data.max_length)
    dev_set = tokenize(dev_raw, tokenizer, task, cfg.data.max_length) if dev_raw is not None else None
    return RunParts(task, tokenizer, train_set, dev_set, student, teacher, method, layers)


def describe(parts: RunParts, cfg: RunConfig) -> dict[str, Any]:
    """A short summary of what was built, for the recipe file."""
    return {
        "task": parts.task.name,
        "train_examples": len(parts.train_set),
        "dev_examples": len(parts.dev_set) if parts.dev_set is not None else 0,
        "teacher": cfg.models.teacher if parts.teacher is not None else None,
        "student_init": cfg.models.student.init,
        "student_teacher_layers": parts.student_layers,
        "run_dir": str(Path(cfg.run_dir)),
    }
