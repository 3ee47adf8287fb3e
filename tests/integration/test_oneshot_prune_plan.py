"""The one-shot pruning plan on the shared runner: prune once on process 0, then distil into the result."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from distil.errors import ConfigError
from distil.plans import run
from qa_lm_helpers import lm_run


def _cfg(tmp_path: Path, family: str, plan: dict, method: str = "kd", **more):
    """KD on the tiny language-modelling corpus after pruning a copy of a tiny decoder of ``family``."""
    settings = {"name": "oneshot_prune", "calibration_rows": 8} | plan
    overrides = {f"plan.{k}": v for k, v in settings.items()} | {"train.max_steps": 3}
    return lm_run(tmp_path, method, family, **overrides, **more)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_plan_prunes_width_and_depth_then_distils(tmp_path, family, capsys):
    cfg = _cfg(tmp_path, family, {"target_num_layers": 1, "target_width_ratio": 0.5})
    result = run(cfg, progress=False)
    config = json.loads((result.student_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["hidden_size"]) == (1, 1, 16)
    assert config["intermediate_size"] == 32 and config["num_attention_heads"] == 2
    AutoModelForCausalLM.from_pretrained(result.student_dir)
    report = json.loads((Path(cfg.run_dir) / "stages" / "prune" / "pruning.json").read_text())
    assert report["widths"] == {"kv_heads": 1, "hidden": 16, "ffn": 32} and len(report["layers"]) == 1
    assert report["seconds"]["importance"] > 0 and report["calibration_rows"] == 8
    card = (Path(cfg.run_dir) / "stages" / "prune" / "student" / "README.md").read_text()
    assert "one-shot structured pruning from calibration activations" in card
    recipe = json.loads((result.student_dir / "recipe.json").read_text())
    assert recipe["stages"]["prune"]["pruning"]["layers"] == report["layers"]
    assert recipe["stages"]["distil"]["steps"] == 3
    # Interrupted in the distil stage: a resume reuses the pruned student, and prunes nothing again.
    shutil.rmtree(result.student_dir)
    shutil.rmtree(Path(cfg.run_dir) / "stages" / "distil")
    capsys.readouterr()
    run(cfg, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "stage prune: reusing finished" in out and "stage distil ->" in out


def test_plan_refusals(tmp_path):
    with pytest.raises(ConfigError, match="one pruning target"):
        _cfg(tmp_path, "llama", {"target_width_ratio": 0.5, "target_params": 10})
    with pytest.raises(ConfigError, match="prunes while distilling by itself"):
        _cfg(tmp_path, "llama", {}, "homodistil", **{"method.t_f": 2, "eval.select": "last"})
    with pytest.raises(ConfigError, match="target_num_layers=5 must be in 1..2"):
        run(_cfg(tmp_path, "llama", {"target_num_layers": 5}), progress=False)
