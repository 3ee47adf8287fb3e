"""GLUE tasks (``data.task=sst2``, ``mnli``, ...) from the official TSV files or the hub.

MNLI is scored on both dev sets, as GLUE reports it: the matched set gives the main keys
(``accuracy``), the mismatched set the same keys suffixed ``_mm`` (``accuracy_mm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from datasets import Dataset

from distil.data.readers import resolve_data_dir
from distil.metrics import GLUE_METRIC_KEYS
from distil.tasks.base import DataCommon, TaskFlags
from distil.tasks.classification import ClassificationTask
from distil.tasks.glue.reader import load_glue_split, load_task_file
from distil.tasks.glue.table import GLUE_TASKS, get_task

__all__ = ["GlueData", "GlueTask"]


@dataclass
class GlueData(DataCommon):
    """The data section of a GLUE task.

    Attributes:
        data_dir: Folder holding ``glue/<TASK>/*.tsv``; else ``$DISTIL_DATA``, else ``../shared/data``, else
            the hub (``nyu-mll/glue``) when online.
        train_file: A file in the task's own columns and a ``label`` column of the official label values
            (what ``distil augment`` writes) that replaces the training split (.csv, .tsv or .jsonl).
        dev_file: Likewise for the evaluation split.
        train_subset: Use a seeded random subset of this many training rows (``None``: all).
        dev_subset: Evaluate on a seeded random subset of this many dev rows (``None``: all).
        group_by_length: Batch examples of similar length together (less padding, same randomness).
        drop_overlap: Drop training rows whose text is also an evaluation row's (they are counted and
            reported either way).
    """

    data_dir: str | None = None
    train_file: str | None = None
    dev_file: str | None = None
    train_subset: int | None = None
    dev_subset: int | None = None
    group_by_length: bool = True
    drop_overlap: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.task = get_task(self.task).name  # canonical name; unknown names fail here

    def regression(self) -> bool:
        """STS-B is the one regression task."""
        return GLUE_TASKS[self.task].is_regression

    def metric_names(self) -> tuple[str, ...]:
        """GLUE's metrics for the task (MNLI adds the mismatched ones)."""
        keys = GLUE_METRIC_KEYS[self.task]
        splits: tuple[str, ...] = ("", "_mm") if self.task == "mnli" and not self.dev_file else ("",)
        if self.split_dev:  # the carved dev split, then the official dev split(s) as test
            splits = ("", *(f"_test{s}" for s in splits))
        return tuple(f"{k}{s}" for s in splits for k in keys)


class GlueTask(ClassificationTask):
    """GLUE tasks from the official TSV files (or the hub): classification, and STS-B regression."""

    kind: ClassVar[str] = "glue"
    names: ClassVar[tuple[str, ...]] = tuple(GLUE_TASKS)
    Config: ClassVar[type[GlueData]] = GlueData
    hub_datasets: ClassVar[tuple[str, ...]] = ("nyu-mll/glue",)  # the official files are the same data

    @classmethod
    def data_from_flags(cls, flags: TaskFlags, eval_only: bool) -> dict[str, Any]:
        """The data-section fields of the command-line task options (`distil.tasks.base.TaskFlags`)."""
        return {"data_dir": flags.data_dir, "dev_file": flags.file if eval_only else None}

    def __init__(self, data: GlueData, seed: int, *, eval_only: bool = False) -> None:
        spec = get_task(data.task)
        data_dir = resolve_data_dir(data.data_dir)
        # A file given for a GLUE task (an augmented transfer set, say) has the task's own columns.
        train: Dataset | None = None
        if eval_only:
            pass
        elif data.train_file:
            train = load_task_file(data.train_file, spec)
        else:
            train = load_glue_split(spec, "train", data_dir)
        devs: dict[str, Dataset]
        if data.dev_file:
            devs = {"dev": load_task_file(data.dev_file, spec)}
        else:
            suffixes = ["dev", "mm"]  # MNLI's validation_mismatched is the second dev split
            devs = {
                suffixes[i]: load_glue_split(spec, split, data_dir) for i, split in enumerate(spec.dev_splits)
            }
        self._init_splits(spec, train, devs, data, seed)
        self._data_dir = data_dir

    def use_split(self, split: str) -> None:
        """Evaluate on another split (``--split``: ``train``, ``validation``...); call before ``prepare``."""
        self._raw_devs = {"dev": load_glue_split(self.spec, split, self._data_dir)}
        self.dev_sets = dict(self._raw_devs)
