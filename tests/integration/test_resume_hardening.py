"""Resume hardening: nothing from a run directory is unpickled, damaged checkpoints fall back, a resumed run
is the run it claims to be, interrupted exports and kills before the first checkpoint recover cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from distil.errors import ConfigError, DistilError
from distil.methods.kd import KD
from distil.training.checkpoint import find_checkpoints
from distil.training.loop import train
from helpers import tiny_run, train_interrupted

COMMON = {"data.dev_file": None, "train.checkpoint_every": 2, "train.epochs": 3}


def _interrupted(tmp: Path, name: str = "run", **overrides: Any) -> Any:
    """A KD run killed in step 6 (checkpoints at steps 2 and 4)."""
    cfg = tiny_run(tmp, **{"run_dir": str(tmp / name), **COMMON, **overrides})
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(cfg, KD, 6, patch)
    return cfg


def _student(run_dir: Path) -> dict[str, Any]:
    return load_file(run_dir / "student" / "model.safetensors")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] - b[k]).abs().max() <= 1e-6) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run every resumed one must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tiny_run(tmp, **{"run_dir": str(tmp / "full"), **COMMON})
    train(cfg, progress=False)
    return _student(Path(cfg.run_dir))


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader executed what a run directory held."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


RESUME_READS = [
    "state.json",
    "optimizer.json",
    "scheduler.json",
    "rng-0.json",
    "rng-0.safetensors",
    "weights/model-00001-of-00001.safetensors",
    "manifest.json",
]


def _plant(checkpoint: Path, name: str, marker: Path, *, fix_manifest: bool) -> None:
    target = checkpoint / name
    assert target.is_file(), f"a resume reads {name}, which the checkpoint should hold"
    target.write_bytes(pickle.dumps(_Payload(marker)))
    if fix_manifest and name != "manifest.json":  # as an attacker who also rewrites the manifest would
        manifest_file = checkpoint / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        data = target.read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest_file.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", RESUME_READS)
def test_a_pickle_planted_in_the_newest_checkpoint_is_skipped_never_run(tmp_path, capsys, reference, name):
    cfg = _interrupted(tmp_path)
    newest = find_checkpoints(Path(cfg.run_dir))[0]
    marker = tmp_path / "executed"
    _plant(newest, name, marker, fix_manifest=False)
    capsys.readouterr()
    train(cfg, resume=True, progress=False)
    out = capsys.readouterr().out
    assert f"skipping checkpoint {newest.name}" in out and "falling back to step-00000002" in out
    assert not marker.exists()
    assert _same(_student(Path(cfg.run_dir)), reference)  # resumed exactly, from the older checkpoint


@pytest.mark.parametrize("name", [n for n in RESUME_READS if n != "manifest.json"])
def test_a_pickle_behind_a_matching_manifest_is_refused_never_run(tmp_path, name):
    cfg = _interrupted(tmp_path)
    marker = tmp_path / "executed"
    for checkpoint in find_checkpoints(Path(cfg.run_dir)):
        _plant(checkpoint, name, marker, fix_manifest=True)
    with pytest.raises(DistilError, match=name.split("/")[0].replace(".", r"\.")):
        train(cfg, resume=True, progress=False)
    assert not marker.exists()


def test_a_truncated_newest_checkpoint_falls_back_and_a_stale_latest_pointer_is_harmless(
    tmp_path, capsys, reference
):
    cfg = _interrupted(tmp_path)
    root = Path(cfg.run_dir) / "checkpoints"
    weights = root / "step-00000004" / "weights" / "model-00001-of-00001.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (root / "latest").write_text("step-00000099")  # a pointer to a folder that does not exist
    capsys.readouterr()
    train(cfg, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "skipping checkpoint step-00000004: weights/model-00001-of-00001.safetensors has 100 bytes" in out
    assert _same(_student(Path(cfg.run_dir)), reference)


def test_no_intact_checkpoint_is_a_clear_error_that_keeps_the_run(tmp_path):
    cfg = _interrupted(tmp_path)
    for checkpoint in find_checkpoints(Path(cfg.run_dir)):
        (checkpoint / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"no intact checkpoint.*step-00000004: it has no manifest"):
        train(cfg, resume=True, progress=False)
    assert find_checkpoints(Path(cfg.run_dir))  # nothing was discarded


def test_a_resume_may_change_how_the_run_executes_and_records_it(tmp_path, reference):
    cfg = _interrupted(tmp_path)
    changed = tiny_run(
        tmp_path, **{"run_dir": cfg.run_dir, **COMMON, "train.log_every": 3, "train.batch_size": 4,
                     "train.grad_accum": 2}
    )  # fmt: skip
    train(changed, resume=True, progress=False)
    recipe = json.loads((Path(cfg.run_dir) / "student" / "recipe.json").read_text())
    resumes = recipe["results"]["resumes"]
    assert len(resumes) == 1 and resumes[0]["from_step"] == 4
    assert resumes[0]["changed"] == {
        "train.batch_size": [8, 4],
        "train.grad_accum": [1, 2],
        "train.log_every": [1, 3],
    }
    assert recipe["config"]["train"]["log_every"] == 3
    assert "log_every: 3" in (Path(cfg.run_dir) / "config.yaml").read_text()
    assert _same(_student(Path(cfg.run_dir)), reference)  # the same run, split differently


def test_a_resume_that_changes_the_global_batch_is_refused(tmp_path):
    cfg = _interrupted(tmp_path)
    saved = (Path(cfg.run_dir) / "config.yaml").read_bytes()
    changed = tiny_run(tmp_path, **{"run_dir": cfg.run_dir, **COMMON, "train.batch_size": 4})
    with pytest.raises(ConfigError, match="global batches of 8 examples"):
        train(changed, resume=True, progress=False)
    assert (Path(cfg.run_dir) / "config.yaml").read_bytes() == saved


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tmp_path, reference):
    cfg = tiny_run(tmp_path, **{"run_dir": str(tmp_path / "early"), **COMMON})
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(cfg, KD, 1, patch)  # killed in the first step
    assert (Path(cfg.run_dir) / "config.yaml").is_file() and not find_checkpoints(Path(cfg.run_dir))
    with pytest.raises(ConfigError, match="--resume to continue it"):
        train(cfg, progress=False)
    train(cfg, resume=True, progress=False)  # the advice works: it restarts cleanly
    assert _same(_student(Path(cfg.run_dir)), reference)


def test_leftovers_of_killed_writes_are_removed_on_the_next_start(tmp_path, capsys):
    cfg = _interrupted(tmp_path)
    run_dir = Path(cfg.run_dir)
    leftovers = [
        run_dir / f".best.tmp{os.getpid() + 1}",
        run_dir / ".student.old123",
        run_dir / "checkpoints" / ".tmp-step-00000006",
        run_dir / "checkpoints" / f".latest.tmp{os.getpid() + 7}",
    ]
    for path in leftovers:
        if path.name.startswith(".tmp-") or ".best" in path.name or ".student" in path.name:
            path.mkdir(parents=True)
            (path / "half-written").write_text("x")
        else:
            path.write_text("x")
    train(cfg, resume=True, progress=False)
    assert not any(path.exists() for path in leftovers)
    assert "left by an interrupted write" in capsys.readouterr().out


def test_a_plan_killed_while_exporting_its_student_is_not_finished_and_resumes(tmp_path, monkeypatch):
    from distil.plans import plan_for, run, runner

    cfg = tiny_run(
        tmp_path, "tinybert", **{"train.max_steps": 2, "data.dev_file": None, "eval.select": "last"}
    )
    real_replace = os.replace

    def killed(src: Any, dst: Any) -> None:
        if Path(dst) == Path(cfg.run_dir) / "student":
            raise KeyboardInterrupt  # between the copy of the last stage and its rename into place
        real_replace(src, dst)

    monkeypatch.setattr(runner.os, "replace", killed)
    assert len(plan_for(cfg).steps) == 2
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    monkeypatch.setattr(runner.os, "replace", real_replace)
    root = Path(cfg.run_dir)
    assert not (root / "student").exists()  # not marked finished, nothing half-written in its place
    result = run(cfg, resume=True, progress=False)
    assert (result.student_dir / "recipe.json").is_file() and not list(root.glob(".student.tmp*"))
    shutil.rmtree(root)


def test_a_plan_does_not_reuse_a_finished_stage_trained_with_another_config(tmp_path):
    from distil.plans import run

    cfg = tiny_run(
        tmp_path, "tinybert", **{"train.max_steps": 2, "data.dev_file": None, "eval.select": "last"}
    )
    run(cfg, progress=False)
    shutil.rmtree(Path(cfg.run_dir) / "student")  # as if killed in the last stage
    shutil.rmtree(Path(cfg.run_dir) / "stages" / "prediction")
    changed = tiny_run(
        tmp_path,
        "tinybert",
        **{"train.max_steps": 2, "data.dev_file": None, "eval.select": "last", "train.lr": 5e-4},
    )
    with pytest.raises(ConfigError, match=r"stage intermediate: .*train\.lr: 0\.001 -> 0\.0005"):
        run(changed, resume=True, progress=False)


@pytest.mark.parametrize("name", ["weights/model-00001-of-00001.safetensors", "method_state.safetensors"])
def test_a_newest_checkpoint_whose_tensors_do_not_load_falls_back_to_an_older_one(
    tmp_path, capsys, reference, name
):
    """Its manifest checks out (rewritten with the damage), so only loading finds it: the older intact
    checkpoint is used instead, named in the output, and the run ends as the uninterrupted one."""
    cfg = _interrupted(tmp_path)
    newest = find_checkpoints(Path(cfg.run_dir))[0]
    if name == "method_state.safetensors":  # KD has no method state: give the newest a damaged one
        (newest / name).write_bytes(b"not safetensors")
        manifest = json.loads((newest / "manifest.json").read_text())
        data = (newest / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (newest / "manifest.json").write_text(json.dumps(manifest))
    else:
        _plant(newest, name, tmp_path / "executed", fix_manifest=True)
    capsys.readouterr()
    train(cfg, resume=True, progress=False)
    out = capsys.readouterr().out
    assert f"skipping checkpoint {newest.name}" in out and "falling back to step-00000002" in out
    assert not (tmp_path / "executed").exists()
    assert _same(_student(Path(cfg.run_dir)), reference)


def test_a_resume_that_fails_to_load_leaves_config_yaml_as_it_was(tmp_path):
    """config.yaml is rewritten (with the resume's safe changes) only once a checkpoint has loaded."""
    cfg = _interrupted(tmp_path)
    config = Path(cfg.run_dir) / "config.yaml"
    before = config.read_bytes()
    for checkpoint in find_checkpoints(Path(cfg.run_dir)):
        _plant(checkpoint, "weights/model-00001-of-00001.safetensors", tmp_path / "x", fix_manifest=True)
    changed = tiny_run(tmp_path, **{"run_dir": cfg.run_dir, **COMMON, "train.log_every": 3})
    with pytest.raises(DistilError, match=r"step-00000002/weights: not weights distil wrote"):
        train(changed, resume=True, progress=False)
    assert config.read_bytes() == before
