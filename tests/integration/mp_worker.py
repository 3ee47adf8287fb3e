"""Runs inside ``torchrun`` for ``test_multiprocess.py``: the runs a JSON job lists, in order, in one launch.

One launch serves several runs (the process group is made once), which keeps the multi-process tests
inside the suite's time. Each run entry:

- ``config``: a YAML run config (a plan's too); ``resume``: continue it.
- ``masks``: a folder; each process appends the positions it masks, one JSON line per micro-batch, to
  ``masks-<rank>.jsonl`` there.
- ``kill_after_step``: every process SIGKILLs itself after that optimiser step (a crash mid-run).
- ``stop_after_step``: every process raises `Stopped` after that step; the launch goes on with the next run.
- ``footprint``: a JSON file; instead of training, take two steps on the loop's modules and write each
  process's local and full bytes of student, optimizer state and teacher (``<file stem>-<rank>.json``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from distil.config import build_run_config
from distil.data.batching import row_lengths
from distil.methods import METHODS
from distil.plans import run
from distil.training import assembly
from distil.training.batches import StepSchedule, step_loader
from distil.training.engines import state_bytes
from distil.training.step import Stepper


class Stopped(Exception):
    """A run stopped on purpose by ``stop_after_step``."""


@contextmanager
def _patched(cls: type, entry: dict[str, Any], rank: int) -> Iterator[None]:
    """The run's method class recording its masks and/or killing the process, for one run."""
    saved = {name: vars(cls)[name] for name in ("prepare_batch", "on_step_end") if name in vars(cls)}
    prepare, step_end = cls.prepare_batch, cls.on_step_end
    if entry.get("masks"):
        out = Path(entry["masks"]) / f"masks-{rank}.jsonl"

        def recording(self: Any, batch: Any) -> Any:
            prepared = prepare(self, batch)
            positions = (
                [] if prepared.mlm_labels is None else (prepared.mlm_labels != -100).nonzero().tolist()
            )
            with out.open("a") as handle:
                handle.write(json.dumps(positions) + "\n")
            return prepared

        cls.prepare_batch = recording
    kill, stop = entry.get("kill_after_step"), entry.get("stop_after_step")
    if kill or stop:

        def ending(self: Any, done: int) -> Any:
            change = step_end(self, done)
            if done == kill:
                os.kill(os.getpid(), signal.SIGKILL)
            if done == stop:
                raise Stopped
            return change

        cls.on_step_end = ending
    try:
        yield
    finally:
        for name in ("prepare_batch", "on_step_end"):
            if name in saved:
                setattr(cls, name, saved[name])
            elif name in vars(cls):
                delattr(cls, name)


def _footprint(cfg: Any, out: Path) -> None:
    """Two steps as the loop takes them, then the bytes this process holds (after the teacher's forwards:
    FSDP would otherwise leave a root's parameters gathered)."""
    prep = assembly.prepare(cfg, resume=False, overwrite=True)
    assembly.start(cfg, prep)
    mods = assembly.assemble(cfg, prep)
    scheduler = torch.optim.lr_scheduler.LambdaLR(mods.optimizer, lambda _: 1.0)
    stepper = Stepper(mods, prep.engine, prep.parts.method, prep.precision, scheduler, None, 1.0, prep.env)
    task = prep.parts.task
    schedule = StepSchedule(row_lengths(task.train_set), cfg.train.batch_size, prep.env.world, 1, 0, False)
    for step_batch in step_loader(
        schedule, task.train_set, task.collate, rank=prep.env.rank, start=(0, 0), steps=2, workers=0,
        pin_memory=False,
    ):  # fmt: skip
        stepper.step(step_batch)
    optim = [t for entry in mods.optimizer.state.values() for k, t in entry.items() if k != "step"]
    report = {
        "parallel": prep.engine.name,
        "student": state_bytes(mods.step.parameters()),
        "optimizer": state_bytes(optim),
        "teacher": state_bytes(mods.teacher.parameters()),
    }
    (out.parent / f"{out.stem}-{prep.env.rank}.json").write_text(json.dumps(report))


def main(job_file: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    for entry in json.loads(Path(job_file).read_text())["runs"]:
        cfg = build_run_config(yaml.safe_load(Path(entry["config"]).read_text()))
        if entry.get("footprint"):
            _footprint(cfg, Path(entry["footprint"]))
            continue
        try:
            with _patched(METHODS[cfg.method_name], entry, rank):
                run(cfg, resume=bool(entry.get("resume")), overwrite=False, progress=False)
        except Stopped:
            pass
        torch.distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
    # Every result is on disk and every process has passed the last barrier: leave without tearing the
    # gloo group down, so that a peer closing its sockets first cannot fail a launch whose work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
