"""HomoDistil on Llama-style decoders: KV groups, SwiGLU channels and the hidden width pruned while the
student is distilled; the export is a standard checkpoint of the pruned config that reloads exactly."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from distil.cli.main import main
from distil.config import build_run_config
from distil.errors import ConfigError
from distil.methods.homodistil import HomoDistil
from distil.training.checkpoint import latest_checkpoint
from distil.training.loop import train
from distil.training.setup import build_run
from factories import tiny_model, tiny_tokenizer
from helpers import CORPUS, corpus_run, live_pruned_student, train_interrupted

IDS = torch.tensor([[2, 9, 17, 30, 44, 61, 70, 88, 97, 3], [2, 8, 25, 33, 41, 3, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def decoder_teacher(folder: Path, family: str) -> Path:
    """A tiny causal LM of ``family`` (2 layers, 4 query heads in 2 KV groups, 32 wide, FFN 64)."""
    model = tiny_model(family, "lm")
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def decoder_cfg(tmp_path: Path, teacher: Path, name: str = "run", steps: int = 6, **method):
    method = {"name": "homodistil", "t_i": 1, "t_f": 4, "delta_t": 1, **method}
    train_cfg = {"max_steps": steps, "warmup_ratio": 0.0, "checkpoint_every": 2, "keep_checkpoints": 4}
    return build_run_config(corpus_run(tmp_path, teacher, {"init": "copy"}, method, name=name, **train_cfg))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_decoder_run_exports_the_pruned_config_and_reloads_exactly(tmp_path, family):
    cfg = decoder_cfg(tmp_path, decoder_teacher(tmp_path / "teacher", family))
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"loss/next_token", "loss/kl", "loss/hidden", "loss/emb", "loss/attn"} <= set(records[0])
    assert records[0]["loss/hidden"] == 0.0 and records[0]["loss/kl"] < 1e-6  # student == teacher at step 0
    config = json.loads((result.student_dir / "config.json").read_text())
    # Half of every width: 1 of 2 KV groups (2 of 4 query heads, each still 8 wide), hidden 16, FFN 32.
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (1, 2, 8)
    assert (config["hidden_size"], config["intermediate_size"]) == (16, 32)
    exported = AutoModelForCausalLM.from_pretrained(result.student_dir).eval()  # from its own config
    live, _ = live_pruned_student(cfg, latest_checkpoint(Path(cfg.run_dir)))
    torch.testing.assert_close(logits(exported), logits(live), atol=1e-5, rtol=1e-5)
    state = load_file(latest_checkpoint(Path(cfg.run_dir)) / "method_state.safetensors")
    assert state["pruning.origin.l0_kv"].tolist() in ([0], [1])  # the teacher group it descends from


def test_decoder_resume_mid_pruning_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    teacher = decoder_teacher(tmp_path / "teacher", "llama")
    full = decoder_cfg(tmp_path, teacher, "full", steps=8, t_f=6)
    train(full, progress=False)
    broken = decoder_cfg(tmp_path, teacher, "resumed", steps=8, t_f=6)
    train_interrupted(broken, HomoDistil, 4, monkeypatch)
    state = load_file(Path(broken.run_dir) / "checkpoints" / "step-00000002" / "method_state.safetensors")
    assert 16 < state["pruning.masks.hidden"].sum() < 32  # interrupted mid-pruning
    train(broken, resume=True, progress=False)
    for name in ("student/model.safetensors", "checkpoints/step-00000008/method_state.safetensors"):
        a, b = load_file(Path(full.run_dir) / name), load_file(Path(broken.run_dir) / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_decoder_targets_and_refusals(tmp_path):
    teacher = decoder_teacher(tmp_path / "teacher", "llama")
    cfg = decoder_cfg(tmp_path, teacher, target_hidden_size=24, target_num_key_value_heads=2)
    method = build_run(cfg).method
    assert isinstance(method, HomoDistil)
    assert method.target == {"kv_heads": 2, "hidden": 24, "ffn": 48}  # FFN scaled like the hidden width
    with pytest.raises(ConfigError, match="target_num_key_value_heads=3 must be in 1..2"):
        build_run(decoder_cfg(tmp_path, teacher, target_num_key_value_heads=3))
    with pytest.raises(ConfigError, match="pruning=masks"):
        build_run(decoder_cfg(tmp_path, teacher, pruning="masks"))


def test_bundled_homodistil_config_runs_on_a_decoder_teacher(tmp_path):
    """``pretrain/homodistil`` as written, given a Llama-style teacher: no head stage (it has its LM head)."""
    teacher = decoder_teacher(tmp_path / "teacher", "qwen3")
    args = [
        f"models.teacher={teacher}", f"run_dir={tmp_path / 'run'}", f"data.corpus=[{CORPUS}]",
        "data.max_length=16", "train.max_steps=6", "train.batch_size=4", "train.checkpoint_every=0",
        "method.t_i=1", "method.t_f=4", "method.target_hidden_size=16", "method.target_intermediate_size=32",
    ]  # fmt: skip
    assert main(["distill", "--config", "pretrain/homodistil", *args, "--no-progress"]) == 0
    config = json.loads((tmp_path / "run" / "student" / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"]) == (16, 32, 2)
    assert not (tmp_path / "run" / "stages").exists()  # the prune run alone


def test_homodistil_on_the_language_modelling_task_scores_perplexity(tmp_path):
    from qa_lm_helpers import lm_run

    overrides = {"models.student.init": "copy", "models.student.layers": None, "method.t_i": 1}
    overrides |= {"method.t_f": 3, "method.delta_t": 1, "eval.select": "last", "train.max_steps": 4}
    cfg = lm_run(tmp_path, "homodistil", "qwen3", **overrides)
    result = train(cfg, progress=False)
    assert result.metrics["perplexity"] > 1
    assert json.loads((result.student_dir / "config.json").read_text())["hidden_size"] == 16
