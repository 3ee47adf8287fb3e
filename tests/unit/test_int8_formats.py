"""int8 formats: each one's arithmetic, its record, its refusal where it is not exact, and (where an x86
emulator is installed) the same check passing on an AVX2 CPU without VNNI."""

import dataclasses
import json
import runpy
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import distil.deploy.onnx as onnx_export
import distil.deploy.runtime as runtime
from distil.cli.deploy import add_export_options
from distil.deploy import INT8_MAX_REL_DIFF, INT8_MIN_AGREEMENT, ExportError, OnnxModel, export_onnx
from distil.deploy.cpu import CpuInfo, _read_cpuinfo, cpu_info
from distil.deploy.int8 import DEFAULT_INT8_FORMAT, INT8_FORMATS
from factories import save_tiny_pair, tiny_model, tiny_tokenizer

AVX2_ONLY = CpuInfo("x86_64", "an AVX2 CPU", ("avx2",))
VNNI = CpuInfo("x86_64", "a VNNI CPU", ("avx2", "avx512f", "avx512bw", "avx512_vnni"))


def _weights(path: Path) -> dict[str, np.ndarray]:
    """The weights an int8 graph multiplies activations by: the second input of its integer products."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    products = [
        n for n in graph.node if n.op_type in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul")
    ]
    assert products, "no integer product in the int8 graph"
    return {n.input[1]: numpy_helper.to_array(inits[n.input[1]]) for n in products if n.input[1] in inits}


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "gpt2"])
def test_default_format_cannot_saturate_on_any_cpu(tmp_path, family):
    """u8 x s7: two products sum to at most 255 * 64 * 2 = 32640, inside int16, on AVX2's kernel too."""
    model_dir = save_tiny_pair(tmp_path / family, family, num_labels=3)
    result = export_onnx(model_dir, int8=True)
    assert result.int8_format == DEFAULT_INT8_FORMAT == "u8s8-reduced"
    weights = _weights(result.int8_path)
    assert weights and all(w.dtype == np.int8 for w in weights.values())
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights.values()) <= 64
    pair_bound = 255 * 64 * 2
    assert pair_bound <= np.iinfo(np.int16).max
    assert result.int8.max_rel <= INT8_MAX_REL_DIFF and result.int8.agreement >= INT8_MIN_AGREEMENT


def test_full_range_weights_would_overflow_int16(tmp_path, monkeypatch):
    """The control: u8s8's weights use the full int8 range, whose pair sums exceed int16."""
    monkeypatch.setattr(onnx_export, "cpu_info", lambda: VNNI)
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    from distil.deploy.int8 import quantize

    fp32 = export_onnx(model_dir).fp32_path
    quantize(fp32, tmp_path / "full.onnx", INT8_FORMATS["u8s8"])
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in _weights(tmp_path / "full.onnx").values())
    assert largest > 64 and 255 * largest * 2 > np.iinfo(np.int16).max


@pytest.mark.parametrize("fmt", ["u8s8-reduced", "u8u8"])
@pytest.mark.parametrize(("family", "head"), [("bert", "seq"), ("gpt2", "lm"), ("bert", "mlm")])
def test_portable_formats_pass_their_check_and_are_recorded(tmp_path, fmt, family, head):
    model_dir = tmp_path / f"{family}-{head}"
    tiny_model(family, head).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    result = export_onnx(model_dir, int8=True, int8_format=fmt)
    assert result.int8.max_rel <= INT8_MAX_REL_DIFF and result.int8.agreement >= INT8_MIN_AGREEMENT
    dtype = np.int8 if INT8_FORMATS[fmt].signed_weights else np.uint8
    assert {w.dtype for w in _weights(result.int8_path).values()} == {np.dtype(dtype)}
    record = json.loads(result.record_path.read_text())
    entry = record["files"]["onnx-int8"]
    assert entry["format"] == fmt and entry["portable"] is True
    assert f"reduce_range={INT8_FORMATS[fmt].reduce_range}" in entry["quantization"]
    assert record["cpu"] == cpu_info().as_dict()
    markdown = (model_dir / "onnx" / "EXPORT.md").read_text()
    assert f"int8 format `{fmt}`" in markdown and "every CPU" in markdown
    assert OnnxModel(result.int8_path).int8_format == fmt


def test_full_range_format_is_refused_where_it_saturates(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "cpu_info", lambda: AVX2_ONLY)
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    with pytest.raises(ExportError, match=r"u8s8 is exact only on CPUs with VNNI.*u8s8-reduced"):
        export_onnx(model_dir, int8=True, int8_format="u8s8")
    assert not (model_dir / "onnx").exists()  # refused before anything was written
    with pytest.raises(ExportError, match="Unknown int8 format 's8'"):
        export_onnx(model_dir, int8=True, int8_format="s8")


@pytest.mark.skipif(not cpu_info().u8s8_exact, reason="u8s8 exports only where its products are exact (VNNI)")
def test_full_range_format_exports_where_exact(tmp_path):
    model_dir = save_tiny_pair(tmp_path / "m", "bert", num_labels=3)
    result = export_onnx(model_dir, int8=True, int8_format="u8s8")
    entry = json.loads(result.record_path.read_text())["files"]["onnx-int8"]
    assert entry["format"] == "u8s8" and entry["portable"] is False
    assert result.int8.max_rel <= INT8_MAX_REL_DIFF


def test_running_a_full_range_graph_where_it_saturates_warns(tmp_path, monkeypatch):
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    result = export_onnx(model_dir, int8=True)
    record = json.loads(result.record_path.read_text())
    record["files"]["onnx-int8"]["format"] = "u8s8"
    result.record_path.write_text(json.dumps(record))
    monkeypatch.setattr(runtime, "cpu_info", lambda: AVX2_ONLY)
    with pytest.warns(UserWarning, match="saturate on this CPU"):
        OnnxModel(result.int8_path)
    monkeypatch.setattr(runtime, "cpu_info", lambda: VNNI)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxModel(result.int8_path)
    del record["files"]["onnx-int8"]["format"]  # an export from before formats were recorded: full range
    result.record_path.write_text(json.dumps(record))
    assert OnnxModel(result.int8_path).int8_format == "u8s8"
    assert OnnxModel(result.fp32_path).int8_format is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma bmi2\n"
    (tmp_path / "cpuinfo").write_text(text + "processor\t: 1\nflags\t\t: avx512f\n")
    assert _read_cpuinfo(tmp_path / "cpuinfo") == ("AMD EPYC 7B12", ("avx2",))
    assert _read_cpuinfo(tmp_path / "missing") == ("", None)
    assert AVX2_ONLY.vnni is False and AVX2_ONLY.u8s8_exact is False
    assert VNNI.u8s8_exact is True
    assert dataclasses.replace(AVX2_ONLY, machine="aarch64").u8s8_exact is True  # ARM kernels widen first
    assert dataclasses.replace(AVX2_ONLY, flags=None).u8s8_exact is None


def test_cli_choices_are_the_formats():
    import argparse

    parser = argparse.ArgumentParser()
    add_export_options(parser)
    action = next(a for a in parser._actions if a.dest == "int8_format")
    assert list(action.choices) == list(INT8_FORMATS) and action.default == DEFAULT_INT8_FORMAT


_EMULATOR = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


@pytest.mark.skipif(
    _EMULATOR is None or not cpu_info().x86, reason="needs qemu-x86_64 (apt-get install qemu-user-static)"
)
def test_exports_hold_on_an_avx2_cpu_without_vnni(tmp_path):
    """Graphs made here, run under an emulated Haswell (AVX2, no AVX-512, no VNNI) by the same code as
    `benchmarks/int8_cpus.py`: the portable formats give what they give natively, within the check;
    full-range int8 weights saturate there (the control)."""
    bench = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "int8_cpus.py"))
    dirs = bench["_build"](tmp_path)
    native, emulated = bench["_run"](dirs, None), bench["_run"](dirs, _EMULATOR)
    saturated = 0
    for d in dirs:
        assert emulated[f"{d}/fp32.onnx"][0] <= 1e-4
        for fmt in INT8_FORMATS.values():
            rel, agreement = emulated[f"{d}/{fmt.name}.onnx"]
            if fmt.portable:
                assert rel <= INT8_MAX_REL_DIFF and agreement >= INT8_MIN_AGREEMENT, (d, fmt.name, rel)
                assert rel == pytest.approx(native[f"{d}/{fmt.name}.onnx"][0], rel=0.01, abs=1e-4)
            else:
                saturated += rel > INT8_MAX_REL_DIFF
    assert saturated >= 2, emulated  # the emulator really runs the saturating AVX2 kernel
