"""Causal LM task: sliding-window perplexity, shifted labels, token-level KD and TED, encoder rejection."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distil.adapters import forward_features
from distil.errors import ConfigError
from distil.losses import soft_target_mask, task_loss
from distil.methods import MethodContext
from distil.methods.kd import KD, KDConfig
from distil.tasks import LMData, LMTask
from distil.tasks.lm.perplexity import perplexity_windows, windowed_perplexity
from distil.training.loop import train
from distil.training.setup import build_run
from factories import save_tiny_pair, tiny_model, tiny_tokenizer
from qa_lm_helpers import CORPUS, lm_run, save_tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore:TED Stage II without method.teacher_filters")


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_dict(rows)


@pytest.mark.parametrize(
    ("n", "max_length", "stride"), [(50, 16, 8), (50, 16, 5), (50, 16, 16), (7, 16, 8), (33, 8, 1)]
)
def test_windows_score_each_token_once_with_the_most_context(n, max_length, stride):
    ids = list(range(100, 100 + n))
    rows = perplexity_windows(ids, max_length, stride)
    scored = []
    for window, first in zip(rows["input_ids"], rows["score_from"], strict=True):
        assert 1 <= first < len(window) <= max_length
        scored += window[first:]
    if stride < max_length:
        assert scored == ids[1:]  # every token but the first, once, in order
    else:  # disjoint windows: each window's first token has no context
        assert scored == [t for i, t in enumerate(ids) if i % max_length != 0]
    with pytest.raises(ValueError, match="at least two tokens"):
        perplexity_windows([5], max_length, min(stride, max_length))


def test_perplexity_equals_a_full_context_computation_for_a_short_text():
    model = tiny_model("gpt2", "lm")
    ids = torch.randint(5, 100, (1, 20))
    windows = _dataset(perplexity_windows(ids[0].tolist(), max_length=32, stride=32))
    out = windowed_perplexity(model, windows, batch_size=4)
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss  # HF shifts the labels itself
    assert out["eval_tokens"] == 19
    assert out["nll"] == pytest.approx(float(reference), rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(float(reference)), rel=1e-5)
    assert out["neg_perplexity"] == -out["perplexity"]


def test_strided_perplexity_matches_hugging_face_per_window_losses():
    model = tiny_model("gpt2", "lm")
    ids = torch.randint(5, 100, (1, 45))
    max_length, stride = 16, 6
    total, count, prev_end = 0.0, 0, 0
    with torch.no_grad():  # the guide's loop, with exact token counts
        for begin in range(0, 45, stride):
            end = min(begin + max_length, 45)
            window = ids[:, begin:end]
            target = window.clone()
            target[:, : -(end - prev_end)] = -100
            n = int((target[:, 1:] != -100).sum())
            total += float(model(input_ids=window, labels=target).loss) * n
            count += n
            prev_end = end
            if end == 45:
                break
    windows = _dataset(perplexity_windows(ids[0].tolist(), max_length, stride))
    for batch_size in (1, 3):
        out = windowed_perplexity(model, windows, batch_size=batch_size)
        assert out["eval_tokens"] == count == 44
        assert out["nll"] == pytest.approx(total / count, rel=1e-5)


def _short(row, n):
    return {"input_ids": row["input_ids"][:n], "attention_mask": [1] * n, "idx": row["idx"]}


def _task(tmp_path, **data):
    cfg = LMData(task="lm", corpus=[str(CORPUS)], dev_file=str(CORPUS / "plain.txt"), max_length=16, **data)
    task = LMTask(cfg, 0)
    task.cache_dir = tmp_path / "blocks"
    return task


def test_labels_are_the_next_token_and_match_hugging_face_loss(tmp_path):
    task = _task(tmp_path)
    task.prepare(tiny_tokenizer(), 16)
    rows = [task.train_set[0], _short(task.train_set[1], 9)]
    batch = task.collate(rows)
    ids, labels = batch.input_ids, batch.labels
    assert torch.equal(labels[0, :-1], ids[0, 1:]) and labels[0, -1] == -100
    assert torch.equal(labels[1, :8], ids[1, 1:9]) and (labels[1, 8:] == -100).all()  # pad and last real
    model = tiny_model("gpt2", "lm")
    logits = model(input_ids=ids[:1]).logits
    ours = task_loss(logits, labels[:1], is_regression=False)
    theirs = model(input_ids=ids[:1], labels=ids[:1]).loss
    torch.testing.assert_close(ours, theirs)
    assert task.main_metric == "neg_perplexity" and task.describe()["eval_stride"] == 8


def test_kd_on_lm_is_token_level_over_positions_with_a_next_token(tmp_path):
    task = _task(tmp_path)
    task.prepare(tiny_tokenizer(), 16)
    batch = task.collate([task.train_set[0], _short(task.train_set[1], 9)])
    teacher = tiny_model("gpt2", "lm")
    student = tiny_model("gpt2", "lm", n_layer=1)
    kd = KD(KDConfig(temperature=2.0, alpha=0.5), MethodContext(student, teacher, False, 0))
    s = forward_features(student, batch, kd.student_request())
    with torch.no_grad():
        t = forward_features(teacher, batch, kd.teacher_request())
    out = kd.loss(batch, s, t)
    keep = batch.labels != -100
    assert keep.sum() == 15 + 8
    assert torch.equal(soft_target_mask(batch.labels, s.logits), keep)
    p = F.softmax(t.logits[keep] / 2, -1)
    kl = 4 * (p * (p.log() - F.log_softmax(s.logits[keep] / 2, -1))).sum(-1).mean()
    ce = F.cross_entropy(s.logits[keep], batch.labels[keep])
    torch.testing.assert_close(out.parts["kd"], kl)
    torch.testing.assert_close(out.parts["task"], ce)
    # Class logits keep the plain batch mean (no mask).
    assert soft_target_mask(torch.tensor([0, 1]), torch.zeros(2, 3)) is None


def test_ted_stage1_lm_heads_start_from_the_model_head(tmp_path):
    cfg = lm_run(tmp_path, "ted_filters", **_stage1())
    parts = build_run(cfg)
    heads = parts.method.trainable_modules()["heads"]
    lm_head = parts.student.get_output_embeddings().weight
    assert set(heads) == {"layer_1"} and torch.equal(heads["layer_1"].out.weight, lm_head)
    assert heads["layer_1"].out.weight.data_ptr() != lm_head.data_ptr()  # a copy, trained on its own
    batch = parts.task.collate([parts.task.train_set[i] for i in range(3)])
    s = forward_features(parts.student, batch, parts.method.student_request())
    out = parts.method.loss(batch, s, None)
    logits = heads["layer_1"].out(parts.method.filters(s.hidden_states)[0])
    keep = batch.labels != -100
    torch.testing.assert_close(out.parts["filter_1"], F.cross_entropy(logits[keep], batch.labels[keep]))
    # Chance: the entropy of the unigram prior of the tokens predicted in this batch.
    counts = torch.bincount(batch.labels[keep]).double()
    prior = counts[counts > 0] / counts.sum()
    assert parts.method.chance_loss() == pytest.approx(float(-(prior * prior.log()).sum()))
    # A filter width other than the model's gives a fresh head of that width.
    wide = build_run(lm_run(tmp_path / "w", "ted_filters", **{**_stage1(), "method.filter_dim": 48}))
    assert wide.method.trainable_modules()["heads"]["layer_1"].out.weight.shape == (128, 48)


def _stage1():
    return {"method.side": "student", "eval.select": "last"}


def test_ted_stage2_lm_kl_is_masked_like_the_next_token_loss(tmp_path):
    parts = build_run(lm_run(tmp_path, "ted", **{"plan.name": "single", "method.layer_map": [2]}))
    batch = parts.task.collate([parts.task.train_set[0], _short(parts.task.train_set[1], 5)])
    m = parts.method
    s = forward_features(parts.student, batch, m.student_request())
    with torch.no_grad():
        t = forward_features(parts.teacher, batch, m.teacher_request())
    out = m.loss(batch, s, t)
    keep = batch.labels != -100
    p = F.softmax(t.logits[keep] / 2, -1)
    kl = 4 * (p * (p.log() - F.log_softmax(s.logits[keep] / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(out.parts["kl"], kl)
    torch.testing.assert_close(out.total, out.parts["task"] + 20 * kl + 20 * out.parts["filter_mse"])


def test_encoder_only_models_are_rejected_before_training(tmp_path):
    bert = save_tiny_pair(tmp_path / "bert", "bert", num_labels=2)
    cfg = lm_run(tmp_path, "kd", **{"models.teacher": str(bert)})
    with pytest.raises(ConfigError, match="'bert' encoder"):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()
    finetune = lm_run(tmp_path, "finetune", **{"models.student": {"init": "pretrained", "path": str(bert)}})
    with pytest.raises(ConfigError, match="causal language model"):
        build_run(finetune)


def test_lm_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="data.task=lm needs data.corpus"):
        LMData(task="lm")
    with pytest.raises(ConfigError, match="eval_stride"):
        LMData(task="lm", corpus=["x"], max_length=16, eval_stride=17)
    save_tiny_lm(tmp_path / "lm")  # a decoder checkpoint builds fine
    parts = build_run(
        lm_run(
            tmp_path, "finetune", **{"models.student": {"init": "pretrained", "path": str(tmp_path / "lm")}}
        )
    )
    assert parts.task.dev_set is not None and len(parts.task.dev_set) > 1


def test_split_dev_holds_out_whole_blocks_and_scores_the_dev_text_as_test(tmp_path):
    dev_text = tmp_path / "dev.txt"
    dev_text.write_text("the cat is a good film and the dog is not . " * 4)
    data = LMData(task="lm", corpus=[str(CORPUS)], max_length=16, cache_dir=str(tmp_path / "c"), split_dev=3,
                  dev_file=str(dev_text))  # fmt: skip
    task = LMTask(data, 0)
    task.prepare(tiny_tokenizer(), 16)
    whole = LMTask(LMData(task="lm", corpus=[str(CORPUS)], max_length=16, cache_dir=str(tmp_path / "c")), 0)
    whole.prepare(tiny_tokenizer(), 16)
    assert task.dev_set is not None and len(task.dev_set) == 3 and task.test_set is not None
    assert len(task.train_set) + 3 == len(whole.train_set)
    held = {tuple(ids) for ids in task.dev_set["input_ids"]}
    assert not held & {tuple(ids) for ids in task.train_set["input_ids"]}  # disjoint blocks
    assert all(s == 1 for s in task.dev_set["score_from"])  # each block scored from its second token
    metrics = task.evaluate(tiny_model("gpt2", "lm"), batch_size=4)
    assert {"perplexity", "perplexity_test"} <= set(metrics)
    assert data.metric_names() == (
        "perplexity", "neg_perplexity", "nll", "eval_tokens",
        "perplexity_test", "neg_perplexity_test", "nll_test", "eval_tokens_test",
    )  # fmt: skip
