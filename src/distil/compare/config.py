"""The ``compare:`` section of a compare config, and the grid of runs it asks for.

A compare config is a run config (``models``, ``data``, ``train``, ``eval``; no ``method``) plus a
``compare:`` section naming the methods, the student shapes and the seeds. Every cell of the grid is an
ordinary run config built from the shared sections, so each is validated like ``distil distill`` would
validate it, all of them before the first run starts.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.compare.scores import check_scorable, test_split
from distil.config import build_run_config
from distil.errors import ConfigError, DistilError
from distil.methods import get_method
from distil.run_config import RunConfig
from distil.schema import from_dict
from distil.tasks import load_task

__all__ = [
    "Cell",
    "CompareConfig",
    "CompareLatency",
    "CompareSetup",
    "TeacherSpec",
    "build_setup",
    "check_models",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TeacherSpec:
    """Where the teacher comes from.

    Attributes:
        finetune: Fine-tune ``models.teacher`` on the task first, once, with the first seed (its run is
            ``RUN_DIR/teacher``). Off: ``models.teacher`` is already fine-tuned on this task.
        train: Overrides of the ``train`` section for the teacher's fine-tuning (e.g. ``{epochs: 8}``).
    """

    finetune: bool = True
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompareLatency:
    """How each student shape (and the teacher) is timed.

    Attributes:
        seq_length: Tokens per timed sequence (random ids, no padding).
        batch_sizes: Batch sizes to time; the first is the one ``--max-latency-ms`` reads.
        repeats: Timed passes per model, runtime and batch size (median reported).
        onnx: Also export each timed model to ONNX and time it in onnxruntime.
        threads: Intra-op threads of both runtimes (``None``: torch's default).
    """

    seq_length: int = 128
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    repeats: int = 20
    onnx: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.seq_length < 1 or self.repeats < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(
                "compare.latency: seq_length, repeats and every batch size must be >= 1, with at least one "
                "batch size."
            )


@dataclass
class CompareConfig:
    """What to compare.

    Attributes:
        methods: Row name -> a method section (``{name: kd, temperature: 2.0}``); TED rows run TED's
            stages, starting from the ``finetune`` row's student of the same shape and seed when the grid
            has one, and the teacher's filters are learned once per shape and shared by every seed.
        students: Shape name -> a ``models.student`` section (``{init: layers, num_layers: 3}``).
        seeds: Training seeds; every cell runs once per seed.
        teacher: Where the teacher comes from.
        baseline: The row every other row is compared with, paired (default: ``finetune`` if present,
            else the first row).
        latency: Latency measurement.
        resamples: Bootstrap resamples of the intervals.
        confidence: Coverage of the intervals.
    """

    methods: dict[str, dict[str, Any]]
    students: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    baseline: str | None = None
    latency: CompareLatency = field(default_factory=CompareLatency)
    resamples: int = 2000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for what, names in (("compare.methods", self.methods), ("compare.students", self.students)):
            if not names:
                raise ConfigError(f"{what} must name at least one entry.")
            for name, node in names.items():
                if not _NAME.match(str(name)):
                    raise ConfigError(
                        f"{what}: {name!r} is not a usable name (letters, digits, '_', '-', '.'; it names a "
                        "folder)."
                    )
                if not isinstance(node, dict):
                    raise ConfigError(f"{what}.{name} must be a mapping, got {node!r}.")
        for name, node in self.methods.items():
            if "name" not in node:
                raise ConfigError(f"compare.methods.{name} needs `name` (the method, e.g. kd).")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"compare.seeds must list distinct seeds, got {self.seeds}.")
        if self.baseline is not None and self.baseline not in self.methods:
            raise ConfigError(
                f"compare.baseline {self.baseline!r} is not a row of compare.methods "
                f"({', '.join(self.methods)})."
            )
        if self.resamples < 100:
            raise ConfigError(f"compare.resamples must be >= 100, got {self.resamples}.")
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"compare.confidence must be in (0.5, 1), got {self.confidence}.")

    @property
    def baseline_row(self) -> str:
        """The row the others are compared with."""
        return self.baseline or ("finetune" if "finetune" in self.methods else next(iter(self.methods)))


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        student: Shape name.
        row: Method row name.
        seed: Training seed.
        config: Its run config.
        level: Runs of a lower level finish before this one starts (a TED row reads the ``finetune``
            row's student and the first seed's teacher filters).
    """

    student: str
    row: str
    seed: int
    config: RunConfig
    level: int

    @property
    def key(self) -> str:
        """``shape/row/seed<k>``: the cell's folder below ``RUN_DIR/runs`` and its name in the tables."""
        return f"{self.student}/{self.row}/seed{self.seed}"


@dataclass(frozen=True)
class CompareSetup:
    """The whole grid: the teacher's run (if it is fine-tuned here), the cells, and the settings.

    Attributes:
        root: ``RUN_DIR``.
        compare: The ``compare:`` section.
        base: The shared sections as a run config would hold them (for the task and the scorer).
        teacher_run: The teacher's fine-tuning run, or ``None`` when ``models.teacher`` is used as it is.
        teacher: The fine-tuned teacher every cell distils from.
        cells: Every cell, in the order they run sequentially.
        raw: The config as read (recorded beside the results).
        task: The task, loaded once (its test items score every model).
        split: The split scored: ``test`` when the data holds one apart from model selection, else ``dev``
            (every run then keeps its final weights: ``eval.select=last``).
    """

    root: Path
    compare: CompareConfig
    base: RunConfig
    teacher_run: RunConfig | None
    teacher: str
    cells: list[Cell]
    raw: dict[str, Any]
    task: Any
    split: str


def _with(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in sections.items():
        out[key] = copy.deepcopy(value)
    return out


def build_setup(raw: dict[str, Any]) -> CompareSetup:
    """Validate a compare config (as read from YAML, overrides applied) and lay out its grid.

    Raises:
        ConfigError: An unknown key, a missing or ill-typed value, a ``method`` section at the top
            level, or any cell that ``distil distill`` would refuse.
    """
    data = copy.deepcopy(raw)
    node = data.pop("compare", None)
    if not isinstance(node, dict):
        raise ConfigError("A compare config needs a `compare:` section (methods, students, seeds).")
    for key in ("method", "plan"):
        if key in data:
            raise ConfigError(
                f"A compare config has no top-level `{key}:` section: list the methods under compare.methods."
            )
    cmp = from_dict(CompareConfig, node, "compare")
    root = Path(str(data.get("run_dir") or "runs/compare"))
    data["run_dir"] = str(root)
    models = dict(data.get("models") or {})
    teacher_src = models.get("teacher")
    if not teacher_src:
        raise ConfigError("models.teacher is required: the model to distil (fine-tuned here unless "
                          "compare.teacher.finetune is false).")  # fmt: skip
    seed0 = cmp.seeds[0]
    base = build_run_config(_with(data, method={"name": "finetune"}))
    task = load_task(base.data, seed0)  # reads the data files: a bad one fails before anything is written
    check_scorable(task)
    split = test_split(task)
    if split == "dev":
        # The dev split is the test split then: picking each run's best checkpoint on it would flatter
        # every row, so every run keeps its final weights.
        data["eval"] = {**(data.get("eval") or {}), "select": "last"}
        base = build_run_config(_with(data, method={"name": "finetune"}))
    train = dict(data.get("train") or {})
    teacher_run = None
    teacher = str(teacher_src)
    if cmp.teacher.finetune:
        teacher_run = build_run_config(_with(
            data, run_dir=str(root / "teacher"), method={"name": "finetune"},
            models={"teacher": None, "student": {"init": "pretrained", "path": teacher}},
            train={**train, **cmp.teacher.train, "seed": seed0},
        ))  # fmt: skip
        teacher = str(root / "teacher" / "student")
    cells = []
    for seed in cmp.seeds:  # seed by seed within each level (grid.py): a stopped compare holds whole seeds
        for shape, student in cmp.students.items():
            for row, method in cmp.methods.items():
                cells.append(_cell(data, cmp, root, teacher, shape, student, row, method, seed))
    return CompareSetup(root, cmp, base, teacher_run, teacher, cells, raw, task, split)


def _cell(
    data: dict[str, Any],
    cmp: CompareConfig,
    root: Path,
    teacher: str,
    shape: str,
    student: dict[str, Any],
    row: str,
    method: dict[str, Any],
    seed: int,
) -> Cell:
    run_dir = root / "runs" / shape / row / f"seed{seed}"
    method = dict(method)
    if "layer_map" not in method and "layer_map" in _fields(str(method["name"])) and "layer_map" in student:
        # A row that names no layer map matches each student to the layers it was taken from.
        method["layer_map"] = student["layer_map"]
    node = _with(
        data, run_dir=str(run_dir), method=method,
        models={**(data.get("models") or {}), "teacher": teacher, "student": student},
        train={**(data.get("train") or {}), "seed": seed},
    )  # fmt: skip
    level = 1
    if method["name"] == "ted":
        finetune = _finetune_row(cmp)
        plan: dict[str, Any] = {"name": "ted", "finetune_teacher": False, "allow_chance_filters": True}
        if finetune is not None:
            # TED's Stage 0 for the student is exactly the finetune row of the same shape and seed.
            plan["finetune_student"] = False
            path = root / "runs" / shape / finetune / f"seed{seed}" / "student"
            node["models"]["student"] = {"init": "pretrained", "path": str(path)}
        if seed != cmp.seeds[0]:
            # The teacher's filters depend on the teacher and its layers only: learned once per shape.
            first = root / "runs" / shape / row / f"seed{cmp.seeds[0]}"
            node["method"]["teacher_filters"] = str(
                first / "stages" / "teacher-filters" / "student" / "method.safetensors"
            )
        node["plan"] = plan
        level = 2 if seed == cmp.seeds[0] else 3
    try:
        config = build_run_config(node)
    except ConfigError as err:
        raise ConfigError(f"compare cell {shape}/{row}/seed{seed}: {err}") from err
    return Cell(shape, row, seed, config, level)


def _fields(method: str) -> set[str]:
    try:
        return {f.name for f in dataclasses.fields(get_method(method).Config)}
    except ConfigError:
        return set()  # an unknown method is reported, with the closest name, when the cell is built


def check_models(setup: CompareSetup) -> bool:
    """Build the first seed's run of each row and shape on the meta device, where its models exist.

    Catches what a run would refuse only once its models are read (a layer map that does not fit the
    depths, a width or head count a student cannot take) before the first run starts; runs whose models an
    earlier run writes (TED's starting students) are checked when they run.

    Returns:
        False (nothing checked) while the teacher that compare fine-tunes does not exist yet.
    """
    from distil.plans.preflight import models_checked, written_later

    if not Path(setup.teacher).exists() and setup.teacher_run is not None:
        return False
    seen = set()
    for cell in setup.cells:
        paths = [cell.config.models.teacher, cell.config.models.student.path]
        if (cell.student, cell.row) in seen or written_later(paths, setup.root):
            continue
        seen.add((cell.student, cell.row))
        try:
            models_checked(cell.config, root=setup.root)
        except DistilError as err:
            raise type(err)(f"compare cell {cell.key}: {err}") from err
    return True


def _finetune_row(cmp: CompareConfig) -> str | None:
    return next((row for row, m in cmp.methods.items() if m.get("name") == "finetune"), None)
