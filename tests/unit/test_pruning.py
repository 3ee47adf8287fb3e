"""HomoDistil's pruning: units, schedule, PLATON scores, masked forward == sliced export, parameter counts."""

import copy
import itertools
import warnings

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from distil.adapters import forward_features
from distil.errors import ConfigError
from distil.methods import MethodContext
from distil.methods.homodistil import HomoDistil, HomoDistilConfig
from distil.models.students import count_parameters
from distil.pruning.platon import cubic_keep
from distil.pruning.units import exported_parameters, prunable_units, resolve_targets
from distil.training.optim import cut_optimizer_state
from distil.types import Batch
from factories import tiny_config, tiny_model, tiny_tokenizer

IDS = torch.tensor([[5, 9, 17, 30, 44, 61, 70, 88, 97, 12], [6, 8, 25, 33, 41, 55, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def _teacher(family: str, head: str = "mlm"):
    if head == "seq":
        model = AutoModelForSequenceClassification.from_config(tiny_config(family, num_labels=3))
    elif family == "gpt2":
        model = tiny_model("gpt2", "lm")
    else:
        model = AutoModelForMaskedLM.from_config(tiny_config(family), attn_implementation="eager")
    model.config.architectures = [type(model).__name__]  # as if saved: it has a trained head
    return model.eval().requires_grad_(False)


def _method(teacher, num_labels: int = 0, **cfg):
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    ctx = MethodContext(student, teacher, False, num_labels, tiny_tokenizer())
    settings = {"t_i": 0, "t_f": 4, "delta_t": 1} | cfg  # target: the default, half of every width
    return HomoDistil(HomoDistilConfig(**settings), ctx), student


def _train(method, student, teacher, steps, start=1, lr=1e-2):
    """Manual loop with AdamW: what the shared loop does around the method's hooks; returns the losses."""
    extra = [p for p in method.trainable_modules().parameters() if p.requires_grad]
    opt = getattr(method, "_opt", None) or torch.optim.AdamW([*student.parameters(), *extra], lr=lr)
    method._opt = opt
    losses = []
    for step in range(start, start + steps):
        losses.append(_backward(method, student, teacher))  # no graph outlives it: shapes may change below
        opt.step()
        opt.zero_grad(set_to_none=True)
        change = method.on_step_end(step)
        if change is not None:
            cut_optimizer_state(opt, change)
    return losses


def _backward(method, student, teacher):
    batch = method.prepare_batch(Batch(input_ids=IDS, attention_mask=MASK, labels=torch.tensor([0, 2])))
    s = forward_features(student, batch, method.student_request())
    with torch.no_grad():
        t = forward_features(teacher, batch, method.teacher_request())
    out = method.loss(batch, s, t)
    out.total.backward()
    method.on_gradients(1.0)  # where the loop reads the step's final gradients
    return {k: v.item() for k, v in out.parts.items()}


def _outputs(model):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=IDS, attention_mask=MASK).logits
    model.train()
    return out


def test_cubic_schedule_is_monotone_and_exact_at_t_f():
    widths = [cubic_keep(t, 64, 16, 10, 50) for t in range(0, 80)]
    assert widths[:11] == [64] * 11 and widths[50:] == [16] * 30
    assert all(a >= b for a, b in itertools.pairwise(widths))
    assert cubic_keep(30, 64, 16, 10, 50) == 16 + round(48 * 0.5**3)
    assert cubic_keep(7, 8, 3, 7, 7) == 3 and cubic_keep(6, 8, 3, 7, 7) == 8  # t_i == t_f: one shot
    teacher = _teacher("bert")
    method, _ = _method(teacher, t_i=3, t_f=3)
    assert [s for s in range(1, 9) if method.pruner.is_prune_step(s)] == [3]
    method, _ = _method(teacher, t_i=1, t_f=8, delta_t=3)
    assert [s for s in range(1, 12) if method.pruner.is_prune_step(s)] == [4, 7, 8]


def test_units_are_coupled_in_the_plan():
    units = prunable_units(_teacher("bert"))
    qk = {(s.param, s.axis, s.query) for s in units.groups["l0_qk"].slots}
    assert qk == {
        ("bert.encoder.layer.0.attention.self.query.weight", 0, True),
        ("bert.encoder.layer.0.attention.self.query.bias", 0, True),
        ("bert.encoder.layer.0.attention.self.key.weight", 0, False),
        ("bert.encoder.layer.0.attention.self.key.bias", 0, False),
    }
    vo = {(s.param, s.axis) for s in units.groups["l0_vo"].slots}
    assert ("bert.encoder.layer.0.attention.output.dense.weight", 1) in vo and len(vo) == 3
    ffn = {(s.param, s.axis) for s in units.groups["l1_ffn"].slots}
    assert ffn == {
        ("bert.encoder.layer.1.intermediate.dense.weight", 0),
        ("bert.encoder.layer.1.intermediate.dense.bias", 0),
        ("bert.encoder.layer.1.output.dense.weight", 1),
    }
    hidden = {(s.param, s.axis) for s in units.groups["hidden"].slots}
    for entry in [
        ("bert.embeddings.word_embeddings.weight", 1),  # also the tied MLM decoder: listed once
        ("bert.embeddings.token_type_embeddings.weight", 1),
        ("bert.encoder.layer.0.attention.self.value.weight", 1),
        ("bert.encoder.layer.0.attention.output.dense.bias", 0),
        ("bert.encoder.layer.1.output.LayerNorm.weight", 0),
        ("cls.predictions.transform.dense.weight", 0),
        ("cls.predictions.transform.dense.weight", 1),
        ("cls.predictions.transform.LayerNorm.bias", 0),
    ]:
        assert entry in hidden
    assert len(units.layer_norms) == 6 and units.head_dim == 8 and units.num_heads == 4
    gpt2 = prunable_units(_teacher("gpt2"))  # Conv1D weights are [in, out]: outputs on axis 1
    qk = {(s.param, s.axis, s.segment) for s in gpt2.groups["l0_qk"].slots}
    assert ("transformer.h.0.attn.c_attn.weight", 1, 0) in qk and (
        "transformer.h.0.attn.c_attn.weight",
        1,
        1,
    ) in qk
    vo = {(s.param, s.axis, s.segment) for s in gpt2.groups["l0_vo"].slots}
    assert vo == {
        ("transformer.h.0.attn.c_attn.weight", 1, 2),
        ("transformer.h.0.attn.c_attn.bias", 0, 2),
        ("transformer.h.0.attn.c_proj.weight", 0, 0),
    }


def test_coupled_units_are_pruned_together_and_heads_stay_uniform():
    teacher = _teacher("bert")
    method, student = _method(teacher, pruning="masks")
    _train(method, student, teacher, 4)
    masks = method.prune_state.masks
    layer = student.bert.encoder.layer[0]
    qk, vo, ffn, hidden = (masks[k].bool() for k in ("l0_qk", "l0_vo", "l0_ffn", "hidden"))
    assert masks["l0_qk"].view(4, -1).sum(-1).tolist() == [4.0] * 4  # 4 of 8 dims in every head
    for off in (~qk).nonzero().flatten():
        for lin in (layer.attention.self.query, layer.attention.self.key):
            assert lin.weight[off].abs().sum() == 0 and lin.bias[off] == 0
    assert layer.attention.self.query.weight[qk].abs().sum(-1).min() > 0
    assert layer.attention.self.value.weight[~vo].abs().sum() == 0
    assert layer.attention.output.dense.weight[:, ~vo].abs().sum() == 0
    assert (
        layer.intermediate.dense.weight[~ffn].abs().sum() == 0
        and layer.intermediate.dense.bias[~ffn].abs().sum() == 0
    )
    assert layer.output.dense.weight[:, ~ffn].abs().sum() == 0
    emb = student.bert.embeddings
    for w in (emb.word_embeddings.weight, emb.position_embeddings.weight, layer.attention.self.key.weight):
        assert w[:, ~hidden].abs().sum() == 0
    assert student.cls.predictions.transform.dense.weight[~hidden].abs().sum() == 0
    assert (
        layer.output.LayerNorm.weight[~hidden].abs().sum() == 0
        and emb.LayerNorm.bias[~hidden].abs().sum() == 0
    )


def test_pruned_units_never_come_back():
    teacher = _teacher("gpt2")
    method, student = _method(teacher, t_f=6, delta_t=2, pruning="masks")
    state = method.prune_state
    history = []
    for step in range(1, 10):
        _train(method, student, teacher, 1, start=step)
        history.append({k: m.clone() for k, m in state.masks.items()})
    for before, after in itertools.pairwise(history):
        assert all(bool((after[k] <= before[k]).all()) for k in before)  # monotone
    assert all(torch.equal(history[-1][k], history[5][k]) for k in history[5])  # held after t_f = 6
    off = ~state.masks["l1_ffn"].bool()
    c_fc = student.transformer.h[1].mlp.c_fc.weight
    assert c_fc[:, off].abs().sum() == 0
    assert student.transformer.wte.weight[:, ~state.masks["hidden"].bool()].abs().sum() == 0
    # Adam's moments regrow pruned weights at every step; the masks re-applied after it keep them at 0.
    batch = Batch(input_ids=IDS, attention_mask=MASK)
    s = forward_features(student, batch, method.student_request())
    t = forward_features(teacher, batch, method.teacher_request())
    method.loss(batch, s, t).total.backward()
    method._opt.step()
    assert c_fc[:, off].abs().sum() > 0
    method.on_step_end(10)
    assert c_fc[:, off].abs().sum() == 0


@pytest.mark.parametrize(
    ("family", "head", "scaling"),
    [("bert", "mlm", "teacher"), ("roberta", "seq", "teacher"), ("xlm-roberta", "mlm", "pruned"),
     ("gpt2", "mlm", "teacher"), ("gpt2", "mlm", "pruned")],
)  # fmt: skip
def test_masked_model_equals_sliced_export_during_a_run(family, head, scaling):
    teacher = _teacher(family, head)
    num_labels = 3 if head == "seq" else 0
    method, student = _method(
        teacher, num_labels, attention_scaling=scaling, t_f=5, delta_t=2, pruning="masks"
    )
    for step in range(1, 7):  # widths change at steps 2, 4 and 5
        _train(method, student, teacher, 1, start=step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not the target widths yet" before t_f
            exported = method.export()
        torch.testing.assert_close(_outputs(exported), _outputs(student), atol=1e-5, rtol=1e-5)
    hidden = exported.config.hidden_size
    assert hidden == 16 and exported.config.num_attention_heads == 4
    assert count_parameters(exported) == exported_parameters(
        student, method.units, {"head_dim": 4, "ffn": 32 if family != "gpt2" else 64}
    )


@pytest.mark.parametrize(
    ("family", "head", "scaling"),
    [("bert", "mlm", "teacher"), ("roberta", "seq", "pruned"), ("gpt2", "mlm", "teacher"),
     ("gpt2", "mlm", "pruned")],
)  # fmt: skip
def test_sliced_run_equals_masked_run(family, head, scaling):
    """Narrowing at each prune event computes what masking at full width does: losses, scores, export."""
    teacher = _teacher(family, head)
    num_labels = 3 if head == "seq" else 0
    settings = {
        "attention_scaling": scaling,
        "t_i": 1,
        "t_f": 6,
        "delta_t": 2,
        "alpha_task": float(num_labels > 0),
    }
    runs = {}
    for mode in ("masks", "slicing"):
        method, student = _method(teacher, num_labels, pruning=mode, **settings)
        widths = []
        losses = []
        for step in range(1, 9):  # widths change at steps 3, 5 and 6
            torch.manual_seed(step)  # the same MLM masks in both runs
            losses += _train(method, student, teacher, 1, start=step, lr=1e-3)
            kept = tuple(int(m.sum()) for m in method.prune_state.masks.values())
            widths.append((sum(p.numel() for p in student.parameters()), kept))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs[mode] = (losses, widths, method.export(), method, student)
    (
        (masked_losses, full, masked_export, masked, _),
        (sliced_losses, narrow, sliced_export, sliced, student),
    ) = (runs["masks"], runs["slicing"])
    for a, b in zip(masked_losses, sliced_losses, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-5), name
    torch.testing.assert_close(_outputs(sliced_export), _outputs(masked_export), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_outputs(student), _outputs(sliced_export), atol=1e-5, rtol=1e-5)
    for name, value in masked_export.state_dict().items():
        torch.testing.assert_close(sliced_export.state_dict()[name], value, atol=1e-5, rtol=1e-5)
    assert {k: int(m.sum()) for k, m in sliced.prune_state.masks.items()} == {
        k: int(m.sum()) for k, m in masked.prune_state.masks.items()
    }
    # The live student is as large as its current widths: fewer parameters exactly when units were pruned.
    assert [k for _, k in narrow] == [k for _, k in full] and len({n for n, _ in full}) == 1
    assert narrow[-1][0] == count_parameters(sliced_export) < full[0][0]
    for (n0, k0), (n1, k1) in itertools.pairwise(narrow):
        assert (n1 < n0) == (k1 != k0) and n1 <= n0


def test_exported_parameter_count_by_hand():
    teacher = _teacher("bert")
    method, student = _method(teacher, target_hidden_size=16, target_intermediate_size=24, t_f=1)
    _train(method, student, teacher, 1)
    vocab, positions, types, h, f, layers = 128, 64, 2, 16, 24, 2
    embeddings = (vocab + positions + types) * h + 2 * h
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
    mlm_head = (h * h + h) + 2 * h + vocab  # transform dense + LayerNorm + decoder bias (decoder tied)
    expected = embeddings + layers * layer + mlm_head
    widths = {"head_dim": 4, "ffn": 24}
    assert count_parameters(method.export()) == expected == exported_parameters(student, method.units, widths)


def test_step_zero_student_equals_teacher_and_distillation_terms_are_zero():
    teacher = _teacher("bert")
    method, student = _method(teacher)
    student.eval()  # (dropout is off in tiny models anyway)
    torch.manual_seed(0)
    batch = method.prepare_batch(Batch(input_ids=IDS, attention_mask=MASK))
    s = forward_features(student, batch, method.student_request())
    t = forward_features(teacher, batch, method.teacher_request())
    assert torch.equal(s.logits, t.logits)
    parts = method.loss(batch, s, t).parts
    assert {"mlm", "kl", "hidden", "emb", "attn"} == set(parts)
    for name in ("hidden", "emb", "attn"):
        assert parts[name].item() == 0.0
    assert abs(parts["kl"].item()) < 1e-6 and parts["mlm"].item() > 0


@pytest.mark.parametrize("kl_positions", ["masked", "all"])
def test_mlm_heads_run_only_where_a_term_reads(kl_positions):
    teacher = _teacher("bert")
    method, student = _method(teacher, kl_positions=kl_positions)
    _train(method, student, teacher, steps=2)  # the student differs from the teacher
    torch.manual_seed(1)
    batch = method.prepare_batch(Batch(input_ids=IDS, attention_mask=MASK))
    masked = batch.mlm_labels != -100
    assert torch.equal(batch.head_positions, masked if kl_positions == "masked" else MASK.bool())

    def parts(b):
        s = forward_features(student, b, method.student_request())
        with torch.no_grad():
            t = forward_features(teacher, b, method.teacher_request())
        return method.loss(b, s, t).parts

    got, want = parts(batch), parts(batch.replace(head_positions=None))
    assert set(got) == set(want) and want["kl"].item() > 0
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)


def test_platon_scores_follow_the_definition():
    teacher = _teacher("bert")
    method, student = _method(teacher, beta1=0.8, beta2=0.9, t_i=3, t_f=6)
    batch = method.prepare_batch(Batch(input_ids=IDS, attention_mask=MASK))
    s = forward_features(student, batch, method.student_request())
    t = forward_features(teacher, batch, method.teacher_request())
    loss = method.loss(batch, s, t).total
    (loss * 0.5).backward(retain_graph=True)  # two accumulation steps: the sensitivity uses the sum
    (loss * 0.5).backward()
    w = student.bert.encoder.layer[0].intermediate.dense.weight
    sens = (w.detach() * w.grad).abs()
    method.on_gradients(1.0)
    method.on_step_end(1)
    state = method.prune_state
    ipt, unc = (
        state.ipt["bert.encoder.layer.0.intermediate.dense.weight"],
        state.unc["bert.encoder.layer.0.intermediate.dense.weight"],
    )
    torch.testing.assert_close(ipt, 0.2 * sens)
    torch.testing.assert_close(unc, 0.1 * (sens - 0.2 * sens).abs())
    group = method.units.groups["l0_ffn"]
    b = student.bert.encoder.layer[0]
    score = lambda n: state.ipt[n] * state.unc[n]  # noqa: E731
    expected = (
        score("bert.encoder.layer.0.intermediate.dense.weight").sum(1)
        + score("bert.encoder.layer.0.intermediate.dense.bias")
        + score("bert.encoder.layer.0.output.dense.weight").sum(0)
    )
    torch.testing.assert_close(method.pruner.unit_scores(group), expected)
    assert b.output.dense.weight.shape[1] == group.size


def test_targets_from_widths_ratio_and_budget():
    model = _teacher("bert")
    units = prunable_units(model)

    def target(**kw):
        return resolve_targets(
            model, units, **({"hidden": None, "ffn": None, "ratio": None, "params": None} | kw)
        )

    assert target(hidden=16) == {"head_dim": 4, "ffn": 32}
    assert target(ratio=0.25) == {"head_dim": 2, "ffn": 16}
    budget = exported_parameters(model, units, {"head_dim": 5, "ffn": 40})
    assert target(params=budget) == {"head_dim": 5, "ffn": 40}
    assert target(params=budget - 1) == {"head_dim": 4, "ffn": 32}
    with pytest.raises(ConfigError, match="multiple of the 4 attention heads"):
        resolve_targets(model, units, hidden=18, ffn=None, ratio=None, params=None)
    with pytest.raises(ConfigError, match="target_params"):
        resolve_targets(model, units, hidden=None, ffn=None, ratio=None, params=10)


def test_unsupported_family_and_bad_settings_are_config_errors():
    phi3 = tiny_model("phi3", "lm")
    with pytest.raises(ConfigError, match="not supported yet"):
        prunable_units(phi3)
    with pytest.raises(ConfigError, match="one HomoDistil target"):
        HomoDistilConfig(target_width_ratio=0.5, target_params=1000)
    with pytest.raises(ConfigError, match="t_i"):
        HomoDistilConfig(t_i=10, t_f=5)
    assert HomoDistilConfig().target_width_ratio == 0.5


def test_restore_narrows_a_fresh_copy_to_saved_sizes_and_refuses_what_does_not_fit():
    teacher = _teacher("bert")
    trained, student = _method(teacher, t_i=1, t_f=3, delta_t=1)
    _train(trained, student, teacher, 2)  # narrowed at step 2
    state = trained.state_dict()
    fresh, copy_ = _method(teacher, t_i=1, t_f=3, delta_t=1)
    change = fresh.restore_shapes(state)
    assert change is not None
    shapes = {n: p.shape for n, p in student.named_parameters()}
    assert {n: p.shape for n, p in copy_.named_parameters()} == shapes
    assert {id(p) for p, _, _ in change.kept} <= {id(p) for p in copy_.parameters()} | {
        id(p) for p in fresh.trainable_modules().parameters()
    }
    fresh.load_state_dict(state)  # the saved masks and EMAs fit the narrowed copy
    assert fresh.restore_shapes(state) is None  # already at those sizes
    wider = {k: torch.ones(64) if k.startswith("pruning.masks.") else v for k, v in state.items()}
    with pytest.raises(ValueError, match="do not fit"):
        fresh.restore_shapes(wider)
    bad = dict(state) | {"pruning.masks.hidden": torch.ones(5)}
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict(bad)
