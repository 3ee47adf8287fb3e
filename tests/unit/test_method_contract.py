"""Every registered method honours the contract; registry, bundled configs and docs agree."""

from pathlib import Path

import pytest
import torch

from distil.adapters import forward_features
from distil.cli.configs import bundled_configs
from distil.methods import METHODS, Method
from distil.training.optim import trainable_parameters
from distil.training.setup import build_run
from helpers import tiny_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tmp_path):
    cls = METHODS[name]
    assert isinstance(cls.name, str) and cls.name == name
    cfg = tiny_run(tmp_path, name)
    cfg.method = cls.Config.tiny()
    parts = build_run(cfg)
    assert isinstance(parts.method, Method)
    assert (parts.teacher is not None) == cls.uses_teacher
    batch = parts.task.collate([parts.task.train_set[i] for i in range(4)])
    student = forward_features(parts.student, batch, parts.method.student_request())
    request = parts.method.teacher_request()
    teacher = None
    if request is not None:
        with torch.no_grad():
            teacher = forward_features(parts.teacher, batch, request)
    out = parts.method.loss(batch, student, teacher)
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    assert all(torch.isfinite(v) for v in out.parts.values()) and out.parts
    out.total.backward()
    declared = {id(p) for _, p in trainable_parameters([parts.student, parts.method.trainable_modules()])}
    if parts.teacher is not None:
        assert all(p.grad is None for p in parts.teacher.parameters())
        assert not declared & {id(p) for p in parts.teacher.parameters()}
    assert any(p.grad is not None for p in parts.student.parameters())


def test_every_method_has_a_card_and_a_bundled_config():
    configs = bundled_configs()
    for name in METHODS:
        assert (ROOT / "docs" / "methods" / f"{name}.md").is_file(), f"docs/methods/{name}.md missing"
        assert any(path.stem == name for path in configs.values()), f"no bundled config for {name}"
    cards = {p.stem for p in (ROOT / "docs" / "methods").glob("*.md")}
    assert cards <= set(METHODS), f"cards without a method: {cards - set(METHODS)}"
