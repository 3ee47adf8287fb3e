"""Running the grid: the teacher once, then every cell, reusing finished runs and resuming interrupted ones.

Cells run level by level (`distil.compare.config.Cell.level`): the plain rows, then the first seed's TED
rows (they learn the teacher's filters), then the other TED rows (they read them). Within a level the
cells are independent, so with ``jobs > 1`` they run in that many worker processes at once, each with
its share of the CPU threads.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from itertools import groupby
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from distil.compare.config import Cell
from distil.config import build_run_config
from distil.errors import DistilError
from distil.run_config import RunConfig
from distil.training.checkpoint import FINISHED_MARKER, find_checkpoints

__all__ = ["run_cells", "run_one"]


def run_one(cfg: RunConfig, *, progress: bool) -> str:
    """Run one grid cell (any plan) to its finished student; returns ``reused``, ``resumed`` or ``ran``.

    A finished run is reused only when its config is this cell's (else the error names what differs); an
    interrupted one resumes from its latest checkpoint (a plan from its last finished stage).
    """
    from distil.plans import plan_for, run_plan
    from distil.training.loop import train
    from distil.training.resume import check_same_run

    folder = Path(cfg.run_dir)
    if (folder / FINISHED_MARKER).is_file():
        check_same_run(folder, cfg, what=f"compare cell {folder}")
        return "reused"
    plan = plan_for(cfg)
    if plan.single:
        resumed = bool(find_checkpoints(folder))
        train(cfg, resume=resumed, overwrite=not resumed, progress=progress)
    else:
        resumed = folder.is_dir()
        run_plan(plan, resume=resumed, progress=progress)
    _drop_checkpoints(folder)
    return "resumed" if resumed else "ran"


def _drop_checkpoints(folder: Path) -> None:
    """Delete a finished cell's resumable checkpoints: it is only ever reused, never resumed.

    Each holds the student with its optimizer state, kept twice per run and per stage: over a grid they
    would fill the disk.
    """
    for checkpoints in [folder / "checkpoints", *folder.glob("stages/*/checkpoints")]:
        if (checkpoints.parent / FINISHED_MARKER).is_file():
            shutil.rmtree(checkpoints, ignore_errors=True)


def _worker(name: str, config: dict[str, Any], threads: int) -> str:
    torch.set_num_threads(threads)
    try:
        return run_one(build_run_config(config), progress=False)
    except DistilError as err:
        raise type(err)(f"compare cell {name}: {err}") from err


def run_cells(cells: list[Cell], *, jobs: int, progress: bool) -> dict[str, str]:
    """Run the cells level by level; returns what happened to each, by its key."""
    done: dict[str, str] = {}
    for _, group in groupby(sorted(cells, key=lambda c: c.level), key=lambda c: c.level):
        todo = []
        for cell in group:
            if (Path(cell.config.run_dir) / FINISHED_MARKER).is_file():
                done[cell.key] = run_one(cell.config, progress=progress)  # checks it is this cell's run
            else:
                todo.append(cell)
        if jobs <= 1 or len(todo) <= 1:
            for cell in todo:
                print(f"[distil] compare: {cell.key} -> {cell.config.run_dir}", flush=True)
                done[cell.key] = run_one(cell.config, progress=progress)
            continue
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {}
            for cell in todo:
                cfg = cell.config
                print(f"[distil] compare: {cell.key} -> {cfg.run_dir} (worker)", flush=True)
                futures[pool.submit(_worker, cell.key, cfg.to_dict(), cfg.train.threads or threads)] = (
                    cell.key
                )
            for future in as_completed(futures):
                if future.exception() is not None:
                    pool.shutdown(cancel_futures=True)  # the runs not started yet wait for the next try
                done[futures[future]] = future.result()
    return done
