"""Every registered method honours the contract and every hook runs; registry, configs and docs agree."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from distil.adapters import forward_features
from distil.cli.configs import bundled_configs
from distil.config import build_run_config, load_config, read_yaml
from distil.methods import METHODS, Method
from distil.plans import PLANS
from distil.training.checks import run_view
from distil.training.optim import trainable_parameters
from distil.training.setup import build_run
from distil.types import FeatureRequest, Runtime
from factories import tiny_config, tiny_tokenizer
from helpers import corpus_run, tiny_run
from qa_lm_helpers import chat_run

ROOT = Path(__file__).resolve().parents[2]

# What a method's check_run asks of the tiny labelled run beyond its tiny settings.
_RUN = {"ted_filters": {"eval.select": "last"}, "homodistil": {"eval.select": "last"}}


def _tiny_cfg(tmp_path, name):
    if name == "gkd":  # completes the prompts of conversations
        return chat_run(tmp_path, name)
    if name != "homodistil_head":
        return tiny_run(tmp_path, name, **_RUN.get(name, {}))
    teacher = tmp_path / "mlm"  # the head stage fits a language-model head on a corpus
    AutoModelForMaskedLM.from_config(tiny_config("bert")).save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    return build_run_config(corpus_run(tmp_path, teacher, {"init": "copy"}, {"name": name}))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tmp_path):
    cls = METHODS[name]
    assert isinstance(cls.name, str) and cls.name == name and cls.Config.name == name
    cfg = _tiny_cfg(tmp_path, name)
    cfg.method = cls.Config.tiny()
    cfg.method.check_run  # noqa: B018  (every config declares its checks)
    parts = build_run(cfg)
    method = parts.method
    assert isinstance(method, Method) and Method in cls.__mro__
    assert (parts.teacher is not None) == cls.uses_teacher
    assert isinstance(method.corrupts_inputs, bool)
    # The teacher-cache rule reads the config's declaration; it must say what the method does.
    reads_logits_only = method.teacher_request() == FeatureRequest(logits=True) and not method.corrupts_inputs
    assert (cfg.method.uncacheable_teacher(run_view(cfg)) is None) == reads_logits_only
    assert getattr(cfg.method, "topk_temperature", None) == method.topk_temperature
    method.attach(Runtime(seed=0, call_student=lambda fn: fn()))
    batch = method.prepare_batch(parts.task.collate([parts.task.train_set[i] for i in range(4)]))
    student = forward_features(parts.student, batch, method.student_request())
    request = method.teacher_request()
    teacher = None
    if request is not None:
        with torch.no_grad():
            teacher = forward_features(parts.teacher, batch, request)
    out = method.loss(batch, student, teacher)
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    assert all(torch.isfinite(v) for v in out.parts.values()) and out.parts
    out.total.backward()
    declared = {id(p) for _, p in trainable_parameters([parts.student, method.trainable_modules()])}
    if parts.teacher is not None:
        assert all(p.grad is None for p in parts.teacher.parameters())
        assert not declared & {id(p) for p in parts.teacher.parameters()}
    # Gradients reach what trains: the student, or (Stage I, head fitting) the parts left trainable.
    assert any(
        p.grad is not None for _, p in trainable_parameters([parts.student, method.trainable_modules()])
    )
    method.on_step_end(1)
    # Non-trainable state round-trips and is never among the trained parameters.
    state = method.state_dict()
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in state.values())
    method.load_state_dict({k: v.clone() for k, v in state.items()})
    assert not {id(v) for v in state.values()} & declared
    exported = method.export_model(parts.student)
    assert exported.config.model_type == parts.student.config.model_type


def test_every_method_has_a_card_and_is_run_by_a_bundled_config():
    configs = bundled_configs()
    run_by = set()
    for name, path in configs.items():
        if name.startswith("pipeline/"):
            run_by |= {"finetune", "kd"}  # the main job's two steps
            continue
        if name.endswith("/compare"):  # a grid of runs: each row's method section is a run's
            run_by |= {str(m["name"]) for m in read_yaml(path)["compare"]["methods"].values()}
            continue
        cfg = load_config(path)
        run_by |= {cfg.method_name, *cfg.plan.methods}
    for name, cls in METHODS.items():
        assert (ROOT / "docs" / "methods" / f"{cls.card}.md").is_file(), f"docs/methods/{cls.card}.md missing"
        assert name in run_by, f"no bundled config runs {name}"
    cards = {p.stem for p in (ROOT / "docs" / "methods").glob("*.md")}
    assert cards <= {cls.card for cls in METHODS.values()}, "cards without a method"
    assert set(PLANS) >= {
        load_config(p).plan_name
        for n, p in configs.items()
        if not n.startswith("pipeline/") and not n.endswith("/compare")
    }


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_card_names_the_method_and_its_paper(name, tmp_path):
    """A new method without its card entry fails here: cards never fall back to another method's words."""
    import json

    from distil.card import METHOD_CARDS, write_card

    assert name in METHOD_CARDS, f"add {name!r} to distil.card.METHOD_CARDS (what it does and its paper)"
    entry = METHOD_CARDS[name]
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "recipe.json").write_text(json.dumps({"method": name}))
    card = write_card(folder).read_text()
    assert f"by **{name}**: {entry.what}" in card
    if entry.paper is None:
        assert name == "finetune" and "no teacher" in card and "arxiv" not in card
    else:
        assert f"https://arxiv.org/abs/{entry.paper[1]}" in card and "no teacher" not in card


def test_method_cards_describe_only_registered_methods():
    from distil.card import METHOD_CARDS

    assert set(METHOD_CARDS) == set(METHODS)
