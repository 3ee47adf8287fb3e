"""TED and LWD: layer maps, Stage I freezing, Stage II freezing and loss, LWD == TED with identity filters,
end-to-end plans on tiny BERT / DeBERTa-v2 / GPT-2, and bad input rejected before training."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_model
from torch import nn

import distil.training.assembly as assembly
from distil.adapters.projections import LayerProjections
from distil.config import build_run_config
from distil.errors import ConfigError
from distil.methods import MethodContext
from distil.methods.lwd import LWD, LWDConfig
from distil.methods.ted import layer_map
from distil.plans import plan_for, run, stage_dir
from distil.training.loop import train
from distil.training.optim import trainable_parameters
from distil.training.setup import build_run
from factories import save_tiny_pair
from helpers import first_rows_features, tiny_run, write_tiny_task

# Tiny Stage-II runs without filter files use random teacher filters on purpose (and say so).
pytestmark = pytest.mark.filterwarnings("ignore:TED Stage II without method.teacher_filters")

# A 2-layer, 16-wide student of the 32-wide tiny teacher's family: filters and projections map 16 -> 32.
NARROW = {
    "models.student.init": "config",
    "models.student.num_layers": 2,
    "models.student.hidden_size": 16,
    "models.student.num_heads": 2,
    "models.student.intermediate_size": 32,
}


def _ted(tmp_path, **overrides):
    return tiny_run(tmp_path, "ted", **{"train.epochs": 1, **overrides})


def _stage2(tmp_path, **overrides):
    """TED's Stage II alone (one run, the plan's other stages left out)."""
    return _ted(tmp_path, **{"plan.name": "single", **overrides})


def _stage1(tmp_path, **overrides):
    """TED's Stage I alone, in the same run folder."""
    run_dir = str(tmp_path / "run-ted")
    return tiny_run(tmp_path, "ted_filters", **{"run_dir": run_dir, "train.epochs": 1, **overrides})


def _capture(monkeypatch):
    """Keep the parts the loop builds, with the weights they started from."""
    seen = {}
    real = assembly.build_run

    def wrapped(cfg, **kw):
        parts = real(cfg, **kw)
        seen["parts"] = parts
        seen["student"] = {k: v.clone() for k, v in parts.student.state_dict().items()}
        seen["extras"] = {k: v.clone() for k, v in parts.method.trainable_modules().state_dict().items()}
        seen["trainable"] = trainable_parameters([parts.student, parts.method.trainable_modules()])
        return parts

    monkeypatch.setattr(assembly, "build_run", wrapped)
    return seen


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("teacher", "student", "scheme", "expected"),
    [
        (12, 6, "paper", [1, 3, 5, 8, 10, 12]),
        (6, 3, "paper", [1, 4, 6]),
        (24, 12, "paper", [1, 3, 5, 7, 9, 11, 14, 16, 18, 20, 22, 24]),
        (12, 6, "uniform", [2, 4, 6, 8, 10, 12]),
        (6, 3, "uniform", [2, 4, 6]),
        (6, 3, [2, 3, 6], [2, 3, 6]),
    ],
)
def test_layer_map(teacher, student, scheme, expected):
    assert layer_map(teacher, student, scheme) == expected


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_stage1_trains_only_filters_and_heads(tmp_path, monkeypatch, side):
    # Two epochs: the final filters (not the first evaluation's) must be exported.
    overrides = {"method.side": side, "eval.select": "last", "train.epochs": 2}
    if side == "teacher":  # the run's student is the teacher checkpoint; filters on M(k) = [2]
        overrides |= {"models.student.init": "pretrained", "models.student.path": str(tmp_path / "teacher")}
        overrides |= {"method.layer_map": "paper", "method.student_depth": 1}
    save_tiny_pair(tmp_path / "teacher", "bert", num_labels=2)
    seen = _capture(monkeypatch)
    cfg = _stage1(tmp_path, **overrides)
    train(cfg, progress=False)
    parts = seen["parts"]
    extras = parts.method.trainable_modules()
    assert {id(p) for _, p in seen["trainable"]} == {id(p) for p in extras.parameters()}
    assert not any(p.requires_grad for p in parts.student.parameters())
    # The backbone (and its own head) is unchanged, in memory and in the exported checkpoint.
    assert _same(seen["student"], parts.student.state_dict())
    out = Path(cfg.run_dir) / "student"
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(exported[k], seen["student"][k]) for k in exported)
    # Filters and their heads did train, and are what the stage exports for later stages.
    saved = load_file(str(out / "method.safetensors"))
    layer = "layer_2" if side == "teacher" else "layer_1"
    assert set(saved) == set(seen["extras"]) and f"filters.maps.{layer}.weight" in saved
    assert any(k.startswith(f"heads.{layer}.") for k in saved)
    assert all(not torch.equal(saved[k], seen["extras"][k]) for k in saved if k.endswith("weight"))
    assert _same(saved, {k: v for k, v in extras.state_dict().items()})
    log = [json.loads(x) for x in (Path(cfg.run_dir) / "log.jsonl").read_text().splitlines()]
    assert any(f"loss/filter_{layer[6:]}" in x for x in log)


def _write_filters(path, layers, in_dim, out_dim, seed=0):
    torch.manual_seed(seed)
    save_model(nn.ModuleDict({"filters": LayerProjections(layers, in_dim, out_dim)}), str(path))
    return str(path)


def test_stage2_leaves_teacher_and_its_filters_unchanged(tmp_path, monkeypatch):
    save_tiny_pair(tmp_path / "teacher", "bert", num_labels=2)
    filters = _write_filters(tmp_path / "t.safetensors", [1, 2], 32, 32)
    seen = _capture(monkeypatch)
    stage2 = {"method.teacher_filters": filters, "method.layer_map": [1, 2]}
    cfg = _stage2(tmp_path, **NARROW, **stage2)
    teacher_before = {k: v.clone() for k, v in build_run(cfg).teacher.state_dict().items()}
    train(cfg, progress=False)
    parts, method = seen["parts"], seen["parts"].method
    assert _same(teacher_before, parts.teacher.state_dict())
    assert _same(
        load_file(filters), {f"filters.{k}": v for k, v in method.teacher_filters.state_dict().items()}
    )
    assert not any(p.requires_grad for p in method.teacher_filters.parameters())
    declared = {id(p) for _, p in seen["trainable"]}
    assert not declared & {id(p) for p in method.teacher_filters.parameters()}
    # The student and its filters trained; only the student's filters are exported beside it.
    assert not _same(seen["student"], parts.student.state_dict())
    saved = load_file(str(Path(cfg.run_dir) / "student" / "method.safetensors"))
    assert set(saved) == {f"filters.maps.layer_{k}.{p}" for k in (1, 2) for p in ("weight", "bias")}
    assert not torch.equal(
        saved["filters.maps.layer_1.weight"], seen["extras"]["filters.maps.layer_1.weight"]
    )


def _apply(linear, x):
    return x @ linear.weight.T + linear.bias


@pytest.mark.parametrize("mask_padding", [False, True])
def test_stage2_loss_equals_hand_computation(tmp_path, mask_padding):
    method_cfg = {"method.layer_map": [1, 2], "method.mask_padding": mask_padding}
    method_cfg |= {"method.kl_alpha": 2.0, "method.mse_alpha": 3.0, "method.temperature": 1.5}
    parts = build_run(_stage2(tmp_path, **NARROW, **method_cfg))
    batch, s, t = first_rows_features(parts, 6)
    m = parts.method
    assert batch.attention_mask.min() == 0  # padding is present, so masking matters
    out = m.loss(batch, s, t)
    task = F.cross_entropy(s.logits, batch.labels)
    p_t, log_p_s = F.softmax(t.logits / 1.5, -1), F.log_softmax(s.logits / 1.5, -1)
    kl = 1.5**2 * (p_t * (p_t.log() - log_p_s)).sum() / len(p_t)
    mask = batch.attention_mask.bool()
    errors = []
    for k, mk in [(1, 1), (2, 2)]:
        g_s = _apply(m.filters.maps[f"layer_{k}"], s.hidden_states[k])
        g_t = _apply(m.teacher_filters.maps[f"layer_{mk}"], t.hidden_states[mk])
        sq = (g_s - g_t) ** 2
        errors.append(sq[mask].mean() if mask_padding else sq.mean())
    mse = sum(errors) / 2
    assert torch.allclose(out.parts["task"], task, atol=1e-6)
    assert torch.allclose(out.parts["kl"], kl, atol=1e-6)
    assert torch.allclose(out.parts["filter_mse"], mse, atol=1e-6)
    assert torch.allclose(out.total, task + 2.0 * kl + 3.0 * mse, atol=1e-5)


def test_regression_kl_is_identically_zero(tmp_path):
    save_tiny_pair(tmp_path / "teacher", "bert", num_labels=1)
    write_tiny_task(tmp_path / "train.jsonl", 32, seed=0, regression=True)
    write_tiny_task(tmp_path / "dev.jsonl", 16, seed=1, regression=True)
    regression = {"data.is_regression": True, "data.label_names": None}
    parts = build_run(_stage2(tmp_path, **regression))
    batch, s, t = first_rows_features(parts, 6)
    out = parts.method.loss(batch, s, t)
    assert out.parts["kl"].item() == 0.0
    assert torch.allclose(out.parts["task"], F.mse_loss(s.logits.squeeze(-1), batch.labels))
    assert torch.allclose(out.total, out.parts["task"] + 20.0 * out.parts["filter_mse"])


def test_lwd_equals_ted_stage2_with_identity_teacher_filters(tmp_path):
    ted_cfg = {"method.layer_map": [1, 2], "method.mse_alpha": 7.0}
    parts = build_run(_stage2(tmp_path, **NARROW, **ted_cfg))
    ctx = MethodContext(student=parts.student, teacher=parts.teacher, is_regression=False, num_labels=2)
    lwd = LWD(LWDConfig(layer_map=[1, 2], mse_alpha=7.0), ctx)
    ted = parts.method
    with torch.no_grad():
        for n in (1, 2):
            ted.teacher_filters.maps[f"layer_{n}"].weight.copy_(torch.eye(32))
            ted.teacher_filters.maps[f"layer_{n}"].bias.zero_()
            ted.filters.maps[f"layer_{n}"].load_state_dict(lwd.projections.maps[f"layer_{n}"].state_dict())
    batch, s, t = first_rows_features(parts, 6)
    a, b = ted.loss(batch, s, t), lwd.loss(batch, s, t)
    assert torch.allclose(a.total, b.total, atol=1e-6)
    assert torch.allclose(a.parts["filter_mse"], b.parts["hidden_mse"], atol=1e-6)
    assert lwd.projections.maps["layer_1"].weight.shape == (32, 16)


def _recipe(run_dir):
    return json.loads((Path(run_dir) / "student" / "recipe.json").read_text())


def test_full_plan_runs_end_to_end_and_reuses_stage_outputs(tmp_path, capsys):
    # Student-side stages run 2 epochs (8 steps), the teacher's 1 epoch (plan.teacher_epochs).
    cfg = _ted(tmp_path, **{"train.epochs": 2, "method.layer_map": "paper", "plan.teacher_epochs": 1})
    result = run(cfg, progress=False)
    root = Path(cfg.run_dir)
    names = ["teacher-finetune", "student-finetune", "teacher-filters", "student-filters", "distill"]
    recipe = _recipe(root)
    assert result.student_dir == root / "student" and list(recipe["stages"]) == names
    assert recipe["method"] == "ted" and (root / "student" / "method.safetensors").is_file()
    distill = _recipe(stage_dir(root, "distill"))["config"]
    assert distill["models"]["teacher"] == str(stage_dir(root, "teacher-finetune") / "student")
    assert distill["models"]["student"]["path"] == str(stage_dir(root, "student-filters") / "student")
    assert distill["method"]["teacher_filters"].endswith("teacher-filters/student/method.safetensors")
    assert distill["method"]["layer_map"] == [2] and distill["method"]["name"] == "ted"
    teacher_filters = _recipe(stage_dir(root, "teacher-filters"))["config"]
    assert teacher_filters["method"]["side"] == "teacher"
    assert _recipe(stage_dir(root, "student-finetune"))["method"] == "finetune"
    assert recipe["stages"]["teacher-filters"]["steps"] == 4 and recipe["stages"]["distill"]["steps"] == 8
    # Stage I exports its final filters (eval.select=last), not the first evaluation's "best".
    assert teacher_filters["eval"]["select"] == "last"
    assert not (stage_dir(root, "student-filters") / "best").exists()
    assert (stage_dir(root, "distill") / "best").exists()
    ckpt = load_file(str(stage_dir(root, "student-filters") / "student" / "method.safetensors"))
    assert set(ckpt) >= {"filters.maps.layer_1.weight", "heads.layer_1.out.weight"}
    # A finished stage is reused by an interrupted plan.
    import shutil

    shutil.rmtree(root / "student")
    shutil.rmtree(stage_dir(root, "distill"))
    capsys.readouterr()
    run(cfg, resume=True, progress=False)
    assert "stage student-filters: reusing" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["deberta-v2", "gpt2"])
def test_ted_and_lwd_end_to_end_on_other_families(tmp_path, family):
    save_tiny_pair(tmp_path / "teacher", family, num_labels=2)
    quick = {"train.max_steps": 2, "plan.finetune_teacher": False, "plan.finetune_student": False}
    quick["models.attn_implementation"] = "eager"  # DeBERTa-v2 has no sdpa kernel
    ted = _ted(tmp_path, **quick, **{"method.filter_type": "mlp", "method.mask_padding": True})
    run(ted, progress=False)
    assert list(_recipe(ted.run_dir)["stages"]) == ["teacher-filters", "student-filters", "distill"]
    lwd = tiny_run(tmp_path, "lwd", **{"train.max_steps": 2, "models.attn_implementation": "eager"})
    train(lwd, progress=False)
    saved = load_file(str(Path(lwd.run_dir) / "student" / "method.safetensors"))
    assert set(saved) == {"projections.maps.layer_1.weight", "projections.maps.layer_1.bias"}


def test_bad_layer_map_is_rejected_before_training(tmp_path):
    cfg = _ted(tmp_path, **{"method.layer_map": [5]})
    with pytest.raises(ConfigError, match=r"method.layer_map=\[5\]: 5 is not a layer of the 2-layer teacher"):
        run(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()
    cfg = _ted(tmp_path, **{"models.student.layers": [1, 2], "method.layer_map": "paper"})
    with pytest.raises(ConfigError, match="method.layer_map=paper"):
        run(cfg, progress=False)
    with pytest.raises(ConfigError, match="method.layer_map=paper"):
        build_run(_stage2(tmp_path, **{"models.student.layers": [1, 2]}))
    with pytest.raises(ConfigError, match="has 2 entries"):
        build_run(tiny_run(tmp_path, "lwd", **{"method.layer_map": [1, 2]}))
    with pytest.raises(ConfigError, match="method.student_depth"):
        _stage1(tmp_path, **{"method.side": "teacher", "eval.select": "last"})


def test_mismatched_filter_dims_are_rejected(tmp_path):
    save_tiny_pair(tmp_path / "teacher", "bert", num_labels=2)
    wide = _write_filters(tmp_path / "wide.safetensors", [1, 2], 32, 32)
    narrow_t = _write_filters(tmp_path / "narrow_t.safetensors", [1, 2], 32, 24)
    other_layers = _write_filters(tmp_path / "l1.safetensors", [1], 32, 32)
    base = {**NARROW, "method.layer_map": [1, 2]}
    with pytest.raises(ConfigError, match=r"method.teacher_filters=.*shape \(24, 32\).*needs \(32, 32\)"):
        build_run(_stage2(tmp_path, **base, **{"method.teacher_filters": narrow_t}))
    # Student filters of 32 -> 32 do not fit a 16-wide student.
    with pytest.raises(ConfigError, match=r"method.student_filters=.*needs \(32, 16\)"):
        build_run(
            _stage2(tmp_path, **base, **{"method.teacher_filters": wide, "method.student_filters": wide})
        )
    # A d_f of 24 on the student side does not match the teacher filters' 32.
    with pytest.raises(ConfigError, match=r"method.teacher_filters=.*filter_dim"):
        build_run(_stage2(tmp_path, **base, **{"method.teacher_filters": wide, "method.filter_dim": 24}))
    with pytest.raises(ConfigError, match=r"holds maps for \['layer_1'\], but this run needs"):
        build_run(_stage2(tmp_path, **base, **{"method.teacher_filters": other_layers}))
    with pytest.raises(ConfigError, match="no such file"):
        build_run(_stage2(tmp_path, **base, **{"method.teacher_filters": str(tmp_path / "missing")}))


def test_other_bad_input(tmp_path):
    corpus = {"data": {"task": "corpus", "corpus": [str(tmp_path)]}, "method": {"name": "ted"}}
    with pytest.raises(ConfigError, match="needs a labelled task"):
        build_run_config(corpus)
    with pytest.raises(ConfigError, match="needs a labelled task"):
        build_run_config({**corpus, "method": {"name": "lwd"}})
    with pytest.raises(ConfigError, match="eval.select=last"):
        _stage1(tmp_path)
    assert not (tmp_path / "run-ted").exists()
    with pytest.raises(ConfigError, match="plan.name=ted runs method 'ted'"):
        tiny_run(tmp_path, "kd", **{"plan.name": "ted"})
    with pytest.raises(ConfigError, match="method.mse_alpha"):
        _ted(tmp_path, **{"method.mse_alpha": -1.0})


def test_finetune_only_plan(tmp_path):
    plan = [(s.name, s.config) for s in plan_for(_ted(tmp_path, **{"plan.stop_after": "finetune"})).steps]
    assert [name for name, _ in plan] == ["teacher-finetune", "student-finetune"]
    assert plan[0][1].models.student.path == str(tmp_path / "teacher") and plan[0][1].models.teacher is None
    # The student's layers come from the fine-tuned teacher.
    assert plan[1][1].models.teacher == str(stage_dir(tmp_path / "run-ted", "teacher-finetune") / "student")
    off = {"plan.stop_after": "finetune", "plan.finetune_teacher": False, "plan.finetune_student": False}
    with pytest.raises(ConfigError, match="nothing to run"):
        _ted(tmp_path, **off)


def test_filter_stage_scores_each_filter_and_warns_about_one_at_chance(tmp_path, capsys):
    cfg = _stage1(
        tmp_path, **{"train.lr": 1e-9, "eval.select": "last", "train.eval_every": 2, "train.epochs": 1}
    )
    result = train(cfg, progress=False)
    records = [json.loads(x) for x in (Path(cfg.run_dir) / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    assert evals and all("eval/filter_1/accuracy" in r for r in evals)  # the 1-layer student's one filter
    out = capsys.readouterr().out
    assert "warning: TED filter on layer 1 ended at chance-level loss" in out
    assert re.search(r"predicting the class prior scores 0\.6\d\d", out)
    assert "filter_1/accuracy" in out  # the filters' own scores are printed, not only the frozen model's
    recipe = json.loads((result.student_dir / "recipe.json").read_text())
    assert any("layer 1" in w for w in recipe["results"]["warnings"])


def test_a_filter_that_learns_is_not_flagged(tmp_path, capsys):
    cfg = _stage1(tmp_path, **{"train.lr": 3e-2, "eval.select": "last", "train.epochs": 6})
    train(cfg, progress=False)
    assert "chance-level" not in capsys.readouterr().out


def test_pooling_by_hand():
    from distil.methods._ted_heads import pool

    states = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    torch.testing.assert_close(pool(states, mask, False, "first"), states[:, 0])
    torch.testing.assert_close(pool(states, mask, False, "last"), torch.stack([states[0, 2], states[1, 1]]))
    mean = torch.stack([states[0, :3].mean(0), states[1, :2].mean(0)])  # padding never counted
    torch.testing.assert_close(pool(states, mask, False, "mean"), mean)
    torch.testing.assert_close(pool(states, mask, False, "auto"), mean)  # encoders: mean
    torch.testing.assert_close(pool(states, mask, True, "auto"), pool(states, mask, True, "last"))


def test_plan_passes_the_pooling_to_both_filter_stages(tmp_path):
    cfg = _ted(tmp_path, **{"plan.filter_pooling": "first", "plan.allow_chance_filters": False})
    stages = {s.name: s for s in plan_for(cfg).steps}
    for name in ("teacher-filters", "student-filters"):
        assert stages[name].config.method.pooling == "first" and stages[name].check is not None
    assert _stage1(tmp_path, **{"eval.select": "last"}).method.pooling == "auto"
    allowed = {s.name: s for s in plan_for(_ted(tmp_path, **{"plan.allow_chance_filters": True})).steps}
    assert allowed["teacher-filters"].check is None and allowed["student-filters"].check is None


def test_plan_stops_after_a_filter_stage_at_chance_unless_allowed(tmp_path):
    from distil.errors import TrainingError

    at_chance = {"plan.teacher_lr": 1e-9, "plan.finetune_teacher": False, "plan.finetune_student": False}
    cfg = _ted(tmp_path, **at_chance, **{"plan.allow_chance_filters": False})
    root = Path(cfg.run_dir)
    with pytest.raises(TrainingError, match=r"layer\(s\) \d .*plan.allow_chance_filters=true"):
        run(cfg, progress=False)
    assert (stage_dir(root, "teacher-filters") / "student" / "recipe.json").is_file()
    assert not stage_dir(root, "student-filters").exists() and not (root / "student").exists()
    allowed = _ted(tmp_path, **at_chance, **{"plan.allow_chance_filters": True})
    run(allowed, overwrite=True, progress=False)
    assert (root / "student" / "recipe.json").is_file()


def test_chance_is_the_entropy_of_the_training_labels(tmp_path):
    """An imbalanced prior (MRPC's 68/32) makes chance 0.627, not ln 2: a filter at the prior is flagged."""
    parts = build_run(_stage1(tmp_path, **{"eval.select": "last"}))
    method = parts.method
    assert method.chance_loss() is None  # nothing seen yet
    method.prior.update(torch.tensor([0] * 40 + [1] * 20), torch.zeros(60, 2))
    method.prior.update(torch.tensor([0] * 28 + [1] * 12), torch.zeros(40, 2))
    expected = -(0.68 * math.log(0.68) + 0.32 * math.log(0.32))
    assert method.chance_loss() == pytest.approx(expected)
    method._recent = {1: torch.tensor(0.61)}  # below ln 2 * 0.95 = 0.658, yet no better than the prior
    assert len(method.end_notes()) == 1 and "predicting the class prior scores 0.627" in method.end_notes()[0]
    method._recent = {1: torch.tensor(0.55)}
    assert method.end_notes() == []


def test_chance_of_regression_qa_and_lm_filters_by_hand():
    """Regression: the targets' variance; QA: the mean entropy of the start and end priors; LM: the
    entropy of the predicted tokens' unigram prior, -100 left out."""
    from distil.methods._ted_chance import LabelPrior

    reg = LabelPrior("seq", True, 1)
    y = torch.tensor([0.0, 1.0, 4.0, 5.0, 2.5])
    reg.update(y[:2], torch.zeros(2, 1))
    reg.update(y[2:], torch.zeros(3, 1))
    assert reg.chance() == pytest.approx(float(y.double().var(unbiased=False)))
    assert "mean target" in reg.what

    qa = LabelPrior("qa", False, 2)
    qa.update(torch.tensor([[0, 0], [3, 4]]), torch.zeros(2, 2, 5))
    qa.update(torch.tensor([[3, 5], [6, 7]]), torch.zeros(2, 2, 8))  # a longer window: the counts grow
    starts, ends = [0, 3, 3, 6], [0, 4, 5, 7]

    def entropy(values):
        p = torch.tensor([values.count(v) / len(values) for v in set(values)], dtype=torch.float64)
        return float(-(p * p.log()).sum())

    assert qa.chance() == pytest.approx((entropy(starts) + entropy(ends)) / 2)

    lm = LabelPrior("lm", False, 0)
    lm.update(torch.tensor([[5, 5, 7, -100], [2, 5, -100, -100]]), torch.zeros(2, 4, 11))
    assert lm.chance() == pytest.approx(entropy([5, 5, 7, 2, 5]))
    assert LabelPrior("seq", False, 3).chance() is None


def test_a_regression_filter_at_chance_is_flagged(tmp_path, capsys):
    """A filter whose MSE stays at the targets' variance is flagged like a classifier at the prior."""
    save_tiny_pair(tmp_path / "teacher", "bert", num_labels=1)
    for name, seed in (("train.jsonl", 0), ("dev.jsonl", 1)):
        rows = write_tiny_task(tmp_path / name, 32, seed=seed, regression=True).read_text().splitlines()
        # Targets around 3 (STS-B's 0-5 scale): a head that learned nothing stays far above their variance.
        shifted = [{**r, "label": r["label"] + 3.0} for r in map(json.loads, rows)]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in shifted))
    regression = {"data.is_regression": True, "data.label_names": None}
    cfg = _stage1(tmp_path, **regression, **{"train.lr": 1e-9, "eval.select": "last", "train.epochs": 2})
    train(cfg, progress=False)
    out = capsys.readouterr().out
    assert re.search(r"TED filter on layer 1 ended at chance-level loss .*predicting the mean target", out)


def test_a_plan_stopped_after_stage_0_exports_a_fine_tuned_student_named_so(tmp_path):
    cfg = _ted(tmp_path, **{"plan.stop_after": "finetune", "plan.finetune_teacher": False})
    result = run(cfg, progress=False)
    recipe = json.loads((result.student_dir / "recipe.json").read_text())
    assert recipe["method"] == "finetune" and list(recipe["stages"]) == ["student-finetune"]
    card = (result.student_dir / "README.md").read_text()
    assert "by **finetune**" in card and "TED" not in card and "Less is More" not in card
