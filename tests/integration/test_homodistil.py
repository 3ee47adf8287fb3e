"""HomoDistil on the shared loop: corpus runs (BERT, GPT-2), export, resume, head stage, labelled task."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from distil.config import build_run_config
from distil.errors import ConfigError
from distil.methods.homodistil import HomoDistil
from distil.plans import run
from distil.training.checkpoint import checkpoint_tensors, latest_checkpoint
from distil.training.loop import train
from distil.training.setup import build_run
from factories import tiny_config, tiny_model, tiny_tokenizer
from helpers import corpus_run, live_pruned_student, tiny_run, train_interrupted

IDS = torch.tensor([[2, 9, 17, 30, 44, 61, 70, 88, 97, 3], [2, 8, 25, 33, 41, 3, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def _lm_teacher(folder: Path, family: str, head: bool = True) -> Path:
    if family == "gpt2":
        model = tiny_model("gpt2", "lm")
    else:
        model = (AutoModelForMaskedLM if head else AutoModel).from_config(tiny_config(family))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # has [PAD], also for GPT-2
    return folder


def _corpus_cfg(tmp_path: Path, teacher: Path, name: str = "run", steps: int = 6, units=None, **method):
    method = {"name": "homodistil", "t_i": 1, "t_f": 4, "delta_t": 1, **method}
    train = {"max_steps": steps, "warmup_ratio": 0.0, "checkpoint_every": 2, "keep_checkpoints": 4}
    data = corpus_run(tmp_path, teacher, {"init": "copy"}, method, name=name, **train)
    return build_run_config(data | ({"plan": {"name": "homodistil", **units}} if units else {}))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_corpus_run_exports_a_standard_checkpoint_equal_to_the_trained_model(tmp_path, family):
    cfg = _corpus_cfg(tmp_path, _lm_teacher(tmp_path / "teacher", family))
    result = train(cfg, progress=False)
    assert result.steps == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lm_term = "loss/mlm" if family == "bert" else "loss/next_token"
    assert {lm_term, "loss/kl", "loss/hidden", "loss/emb", "loss/attn"} <= set(records[0])
    assert records[0]["loss/hidden"] == 0.0 and records[0]["loss/kl"] < 1e-6  # student == teacher at step 0
    assert records[-1]["loss/hidden"] > 0
    config = json.loads((result.student_dir / "config.json").read_text())
    width, ffn = ("hidden_size", "intermediate_size") if family == "bert" else ("n_embd", "n_inner")
    assert (config[width], config[ffn]) == ((16, 32) if family == "bert" else (16, 64))
    base = AutoModel.from_pretrained(result.student_dir)  # no custom code
    assert base.config.num_attention_heads == 4
    last = latest_checkpoint(Path(cfg.run_dir))
    state = load_file(last / "method_state.safetensors")  # masks; EMAs released after t_f
    emb = "transformer-wte-weight" if family == "gpt2" else "bert-embeddings-word_embeddings-weight"
    assert state["pruning.masks.hidden"].sum() == 16 and state[f"pruning.ipt.{emb}"].numel() == 0
    assert set(load_file(result.student_dir / "method.safetensors")) == {"emb_proj.weight"} | {
        f"hidden_proj.{k}.weight" for k in range(2)
    }  # beside the student: the projections only
    live, _ = live_pruned_student(cfg, latest_checkpoint(Path(cfg.run_dir)))  # narrowed, as a resume would
    exported = type(live).from_pretrained(result.student_dir).eval()
    torch.testing.assert_close(_logits(exported), _logits(live), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_loop_run_narrowed_at_prune_events_equals_the_masked_run(tmp_path, family):
    """``pruning=slicing`` (the default) and ``masks`` train the same student through the loop."""
    teacher = _lm_teacher(tmp_path / "teacher", family)
    results = {}
    for mode in ("slicing", "masks"):
        cfg = _corpus_cfg(tmp_path, teacher, mode, steps=8, t_f=6, delta_t=2, pruning=mode)
        cfg.train.log_every = 1
        result = train(cfg, progress=False)
        lines = (result.run_dir / "log.jsonl").read_text().splitlines()
        results[mode] = ([json.loads(line) for line in lines if '"loss/total"' in line], result.student_dir)
    (sliced, sliced_dir), (masked, masked_dir) = results["slicing"], results["masks"]
    assert len(sliced) == len(masked) == 8
    for a, b in zip(sliced, masked, strict=True):
        for key in (k for k in b if k.startswith("loss/")):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    a, b = load_file(sliced_dir / "model.safetensors"), load_file(masked_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
    checkpoint = latest_checkpoint(Path(tmp_path / "slicing"))  # the weights as trained: narrowed
    weights = checkpoint_tensors(checkpoint, "model.student.")
    emb = "transformer.wte.weight" if family == "gpt2" else "bert.embeddings.word_embeddings.weight"
    assert weights[emb].shape[1] == 16


def test_resume_mid_pruning_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    teacher = _lm_teacher(tmp_path / "teacher", "bert")
    settings = {"steps": 8, "t_f": 6}
    full = _corpus_cfg(tmp_path, teacher, "full", **settings)
    train(full, progress=False)

    broken = _corpus_cfg(tmp_path, teacher, "resumed", **settings)
    train_interrupted(broken, HomoDistil, 3, monkeypatch)
    state = load_file(Path(broken.run_dir) / "checkpoints" / "step-00000002" / "method_state.safetensors")
    assert state["pruning.masks.hidden"].sum() == 24  # interrupted mid-pruning (32 -> 16 at t_f = 6)
    train(broken, resume=True, progress=False)

    def files(root: str, name: str) -> dict[str, torch.Tensor]:
        path = Path(root) / name
        return load_file(path) if path.suffix == ".safetensors" else checkpoint_tensors(path, "")

    names = ["student/model.safetensors"]
    for s in (4, 8):  # step 4: mid-pruning, with the PLATON EMAs; step 8: EMAs released after t_f
        names += [f"checkpoints/step-0000000{s}", f"checkpoints/step-0000000{s}/method_state.safetensors"]
    for name in names:
        a, b = files(full.run_dir, name), files(broken.run_dir, name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_teacher_without_mlm_head_fits_one_first(tmp_path):
    teacher = _lm_teacher(tmp_path / "teacher", "bert", head=False)
    with pytest.raises(ConfigError, match="head_steps"):
        build_run(_corpus_cfg(tmp_path, teacher))
    cfg = _corpus_cfg(tmp_path, teacher, units={"head_steps": 2, "head_lr": 1e-2})
    result = run(cfg, progress=False)
    head = Path(cfg.run_dir) / "stages" / "head" / "student"
    fitted = AutoModelForMaskedLM.from_pretrained(head)
    assert json.loads((head / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    original = AutoModel.from_pretrained(teacher)
    body = fitted.bert.state_dict()
    for key, value in original.state_dict().items():  # the body stayed frozen (no pooler in MaskedLM)
        if key in body:
            torch.testing.assert_close(body[key], value)
    assert json.loads((result.student_dir / "config.json").read_text())["hidden_size"] == 16
    recipe = json.loads((result.student_dir / "recipe.json").read_text())
    assert set(recipe["stages"]) == {"head", "prune"}
    with pytest.raises(ConfigError, match="never reach"):
        train(_corpus_cfg(tmp_path, teacher, "short", steps=3), progress=False)


def test_labelled_task_prunes_the_classifier_head_too(tmp_path):
    cfg = tiny_run(tmp_path, "kd", **{"models.student.init": "copy", "models.student.layers": None})
    cfg.method = HomoDistil.Config(target_hidden_size=16, t_i=0, t_f=6, delta_t=2, alpha_task=1.0)
    with pytest.raises(ConfigError, match="eval.select=last"):
        train(cfg, progress=False)
    cfg.eval.select = "last"
    result = train(cfg, progress=False)
    assert result.steps == 8 and "accuracy" in result.metrics
    model = AutoModelForSequenceClassification.from_pretrained(result.student_dir)
    assert (model.config.hidden_size, model.config.intermediate_size) == (16, 32)
